"""sessionstate as the memory of the OpenAI Agents SDK: a ``Session`` whose history is shared
by every worker process, with the version check underneath.

    from agents import Agent, Runner
    from sessionstate.openai_agents import SessionStateSession

    session = SessionStateSession("user-42", url="postgresql://app@db/agents")
    result = await Runner.run(agent, "Hello", session=session)

Install with ``pip install 'sessionstate[openai-agents]'``. This module imports the SDK;
``import sessionstate`` never does.

The SDK's ``session_id`` (any non-empty string of up to 255 characters) names exactly one
sessionstate session: its id is ``sessionstate_id(session_id)``, a UUID derived from the string
(uuid5), so every process computes the same one without asking the database. The session is
created on first use, by whichever call comes first; when two processes create it at once,
the loser's INSERT fails with AlreadyExists and it simply uses the winner's. The history is
the session's current state's ``conversation_history``, and every operation is one of the
core's single-statement operations on it: ``get_items`` slices it in the database,
``add_items`` appends in one UPDATE, ``pop_item`` is the core's atomic pop, ``clear_session``
empties it while the session and its metadata stay.
"""

import asyncio
import hashlib
import json
import uuid

from . import aio
from .errors import AlreadyExists, InvalidStateData, SessionNotFound
from .validation import check_optional_text, check_short_text, refuse

try:
    from agents.memory import SessionSettings
except ImportError as exc:  # the SDK is an optional extra
    raise ImportError("sessionstate.openai_agents needs the OpenAI Agents SDK; install it "
                      "with: pip install 'sessionstate[openai-agents]'") from exc

EXTRA = "sessionstate[openai-agents]"
DEFAULT_MODE = "openai-agents"
SESSION_ID_LIMIT = 255  # characters of the SDK's session_id
# The namespace of the uuid5 ids: uuid5(NAMESPACE_URL, "sessionstate:openai-agents"). Fixed
# forever: changing it would orphan every stored session.
NAMESPACE = uuid.UUID("7e87b884-227d-5dda-9cdb-86bd222dde0a")
# The keys under which the session's meta keeps the SDK's session_id: as it is, or, when it
# holds a character no database stores (NUL, a lone surrogate), as a JSON string literal.
META_KEY = "openai_agents_session_id"
META_KEY_ESCAPED = "openai_agents_session_id_json"
ALL_ITEMS = 2**31 - 1  # recent_messages' largest limit: a longer one means "everything"
# How many times an operation re-resolves its session when the state it knew has gone
# (deleted, purged, or replaced between two calls): the session is then created afresh.
RESOLVE_ATTEMPTS = 3

# state ids by (url or None, sessionstate id), so that a session object made per request
# finds its state without reading it (get_state reads the whole history). An entry that has
# gone stale (the state was deleted) is noticed by the next operation, which resolves again.
STATE_ID_CACHE = 10_000
_STATE_IDS = {}
# The URL this module connected sessionstate.aio to, and on which loop (see _use_database).
_connected = {"url": None, "loop": None}


def sessionstate_id(session_id):
    """The id of the sessionstate session that the SDK's `session_id` names.

    uuid5 of the string in NAMESPACE (hashed as UTF-8, lone surrogates included), so any
    process, tool or script finds the session from the SDK's string alone.
    """
    _check_session_id(session_id)
    digest = hashlib.sha1(NAMESPACE.bytes + session_id.encode("utf-8", "surrogatepass"))
    return str(uuid.UUID(bytes=digest.digest()[:16], version=5))


def _check_session_id(session_id):
    if not isinstance(session_id, str) or not session_id or len(session_id) > SESSION_ID_LIMIT:
        refuse("session_id", "must be a non-empty string of at most %d characters, got %r"
               % (SESSION_ID_LIMIT, session_id))


def _storable(text):
    try:
        check_optional_text("session_id", text, limit=SESSION_ID_LIMIT)
    except InvalidStateData:
        return False
    return True


def _settings(value):
    """The SDK's SessionSettings from None, an instance or a dict, as the SDK's sessions take."""
    if value is None:
        return SessionSettings()
    if isinstance(value, SessionSettings):
        return value
    if isinstance(value, dict):
        return SessionSettings(**value)
    raise TypeError("session_settings must be a SessionSettings, a dict or None, got %r"
                    % (value,))


async def _settled(write):
    """Await `write` to its end even when the caller is cancelled meanwhile, then re-raise the
    cancellation (as the SDK's own sessions do): a write is never cut off halfway, with its
    connection in the middle of a statement."""
    task = asyncio.ensure_future(write)
    cancelled = None
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError as exc:
            cancelled = cancelled or exc
    if cancelled is not None:
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation is what the caller gets
        raise cancelled
    return task.result()


class SessionStateSession:
    """The Agents SDK's ``Session`` protocol on sessionstate's async API.

    session_id: the SDK's string. url: the database (else whatever sessionstate.aio is
    connected to, which connects to $SESSIONSTATE_DATABASE_URL or ~/.sessionstate on first
    use). The session's `name` (default: the session_id), `user_id`, `meta` (merged with the
    session_id under "openai_agents_session_id"), `mode` and `ttl` (seconds or a timedelta)
    are written when the session is created, on first use; an existing session keeps its own.
    session_settings: the SDK's SessionSettings (or a dict); its `limit` caps what
    get_items() returns when called without one, as for the SDK's own sessions.
    """

    session_settings = None

    def __init__(self, session_id, *, url=None, name=None, user_id=None, meta=None, ttl=None,
                 mode=DEFAULT_MODE, session_settings=None):
        self.session_id = session_id
        self.sessionstate_id = sessionstate_id(session_id)
        self.session_settings = _settings(session_settings)
        self.url = url
        check_short_text("mode", mode, nullable=False)
        check_optional_text("name", name)
        check_optional_text("user_id", user_id)
        if meta is not None and not isinstance(meta, dict):
            refuse("meta", "must be a dict or None, got %r" % (meta,))
        meta = dict(meta or {})
        if _storable(session_id):
            meta[META_KEY] = session_id
            if name is None:
                name = session_id
        else:
            meta[META_KEY_ESCAPED] = json.dumps(session_id)
        self._creation = {"mode": mode, "name": name, "user_id": user_id, "meta": meta,
                          "ttl": ttl}
        # The key of the state id's cache entry: the database (None: aio's) and the session.
        self._key = (url, self.sessionstate_id)

    def __repr__(self):
        return "SessionStateSession(%r, sessionstate_id=%r)" % (self.session_id,
                                                                  self.sessionstate_id)

    # -- the Session protocol -------------------------------------------------------------

    async def get_items(self, limit=None):
        """The last `limit` items, oldest first (all of them when no limit applies).

        An explicit `limit` wins over session_settings.limit; None in both reads everything;
        a limit of 0 or below returns []. The slicing happens in the database.
        """
        if limit is None:
            limit = self.session_settings.limit
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int):
                raise TypeError("limit must be an int or None, got %r" % (limit,))
            if limit <= 0:
                await self._resolve()  # first use still creates the session
                return []
        if limit is None or limit >= ALL_ITEMS:
            state = await self._resolve(read=True)
            return state.conversation_history or []
        return await self._on_state(aio.recent_messages, limit)

    async def add_items(self, items):
        """Append `items` in one statement: all of them or, on any error, none."""
        items = list(items)
        if not items:
            await self._resolve()
            return
        await _settled(self._add(items))

    async def pop_item(self):
        """Remove and return the last item, atomically (None when the history is empty).

        Concurrent callers in any processes never get the same item, and none is lost.
        """
        return await _settled(self._on_state(aio.pop_message))

    async def clear_session(self):
        """Empty the history; the session, its state and its metadata stay."""
        await _settled(self._on_state(aio.clear_messages))

    async def _add(self, items):
        if self._state_id is None and await self._resolve(first_history=items):
            return  # the session was created holding the items, in one transaction
        await self._on_state(aio.append_messages, items)

    # -- resolving the session ------------------------------------------------------------

    @property
    def _state_id(self):
        return _STATE_IDS.get(self._key)

    @_state_id.setter
    def _state_id(self, state_id):
        if state_id is None:
            _STATE_IDS.pop(self._key, None)
            return
        if len(_STATE_IDS) >= STATE_ID_CACHE and self._key not in _STATE_IDS:
            _STATE_IDS.pop(next(iter(_STATE_IDS)))  # the oldest entry
        _STATE_IDS[self._key] = state_id

    async def _on_state(self, operation, *args):
        """operation(state_id, *args) on the session's state, created on first use; when
        that state has gone since (deleted, purged), the session is resolved again."""
        for attempt in range(RESOLVE_ATTEMPTS):
            await self._resolve()
            state_id = self._state_id
            try:
                return await operation(state_id, *args)
            except SessionNotFound:
                if attempt == RESOLVE_ATTEMPTS - 1:
                    raise
                if self._state_id == state_id:
                    self._state_id = None

    async def _resolve(self, read=False, first_history=None):
        """Know the session's current state, creating the session if it does not exist.

        Returns None when the state id was already known (and neither read nor
        first_history asks for more); the state, with its history, when read=True; with
        first_history, True if this call created the session holding those items, else
        False (it existed: the caller appends them).
        """
        await self._use_database()
        if not read and first_history is None and self._state_id is not None:
            return None
        for _ in range(RESOLVE_ATTEMPTS):
            try:
                state = await aio.get_state(self.sessionstate_id)
            except SessionNotFound:
                pass
            else:
                self._state_id = state.id
                return False if first_history is not None else state
            try:
                state = await aio.create_session(
                    session_id=self.sessionstate_id, conversation_history=first_history,
                    **self._creation)
            except AlreadyExists:
                continue  # another process created it first: read it again
            self._state_id = state.id
            return True if first_history is not None else state
        raise SessionNotFound("session %s (the openai-agents session_id %r) exists but has no "
                              "state" % (self.sessionstate_id, self.session_id))

    async def _use_database(self):
        """Point sessionstate.aio at this session's `url`, on the running loop.

        Without a url the session uses whatever sessionstate.aio is connected to (aio itself
        connects to the default database on first use). With one, aio is connected to it
        unless this module already did so on this loop: an async database belongs to the
        loop that opened it. aio holds one database per process: give every session of a
        process the same url (or none), since a session of another url reconnects aio
        under the others' feet; and after ``aio.close()`` on a loop where this module
        connected it, use no url= session on that loop again (aio would fall back to its
        default database).
        """
        if self.url is None:
            return
        url = self.url
        loop = asyncio.get_running_loop()
        if _connected["url"] == url and _connected["loop"] is loop:
            return
        await aio.connect(url)
        _connected.update(url=url, loop=loop)


__all__ = ["SessionStateSession", "sessionstate_id", "NAMESPACE", "DEFAULT_MODE", "EXTRA"]
