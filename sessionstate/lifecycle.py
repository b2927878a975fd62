"""Session lifecycle for real workers: create, resume, append, change status, expire, purge, list.

These functions are what an agent application calls instead of keeping sessions in a dict.
Every write is version-bumped; writes that read first (modify_state, the status changes)
hold the write lock from the read to the write, so concurrent worker processes queue up
instead of losing updates. Every input is checked before anything is written.
"""

import datetime as dt
import random
import time

import peewee as pw

from . import backends
from .db import get_database
from .errors import InvalidTransition, SessionNotFound, StaleStateError
from .migrate import ensure_migrated
from .models import Session, SessionState, utcnow
from .state import bump, checked_changes, missing_or_stale
from .statements import compiled, param
from .validation import (INT32, STATUSES, TRANSITIONS, check_id, check_json,
                         check_optional_text, check_short_text, check_state_values,
                         check_timestamp, check_version, refuse)

LIVE = ("active", "suspended")
ID_BATCH = 500  # ids per IN (...) list, well under every backend's parameter limit


# -- helpers ---------------------------------------------------------------------------------

def _ready_database():
    database = get_database()
    ensure_migrated(database)
    return database


def _positive_int(field, value, maximum=INT32 - 1):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        refuse(field, "must be a positive integer, got %r" % (value,))
    if value > maximum:
        refuse(field, "must be at most %d, got %d" % (maximum, value))


def _expiry(now, ttl):
    """now + ttl (seconds, or a timedelta) as an aware datetime; None without a ttl."""
    if ttl is None:
        return None
    try:
        if isinstance(ttl, (int, float)) and not isinstance(ttl, bool):
            ttl = dt.timedelta(seconds=ttl)
        if isinstance(ttl, dt.timedelta) and ttl > dt.timedelta(0):
            return now + ttl
    except (ValueError, OverflowError):  # NaN, infinities, beyond year 9999
        pass
    refuse("ttl", "must be a positive number of seconds or timedelta that ends before the "
           "year 10000, got %r" % (ttl,))


def _chunks(items, size=ID_BATCH):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _latest_state_query(session_id, *columns):
    """The session's most recently updated state (ties: the newest created, then the id)."""
    return (SessionState.select(*columns)
            .where(SessionState.session_id == session_id)
            .order_by(SessionState.updated_at.desc(), SessionState.created_at.desc(),
                      SessionState.id.desc())
            .limit(1))


# -- creating and reading -------------------------------------------------------------------

def create_session(mode, *, name=None, user_id=None, meta=None, ttl=None,
                   conversation_history=None, context_variables=None, plan_data=None):
    """Create a session and its active state in one transaction; returns the SessionState."""
    database = get_database()
    check_short_text("mode", mode, nullable=False)
    check_optional_text("name", name)
    check_optional_text("user_id", user_id)
    check_json("meta", meta, backends.json_max_depth(database))
    now = utcnow()
    expires_at = _expiry(now, ttl)
    session = Session(name=name, user_id=user_id, meta=meta, status="active",
                      created_at=now, last_active_at=now)
    state = SessionState.create_for_session(
        session.id, mode,
        conversation_history=[] if conversation_history is None else conversation_history,
        context_variables={} if context_variables is None else context_variables,
        plan_data=plan_data,
        expires_at=expires_at,
    )
    state.created_at = state.updated_at = now
    check_state_values(dict(state.__data__), backends.json_max_depth(database))
    ensure_migrated(database)

    def insert_both():
        with backends.write_lock(database):
            session.save(force_insert=True)
            state.save(force_insert=True)

    backends.with_retries(insert_both)
    return state


def get_state(session_id):
    """The session's current state: its most recently updated one. SessionNotFound if none."""
    check_id("session_id", session_id)
    database = _ready_database()
    statement = compiled(database, "get_state",
                         lambda: _latest_state_query(param("session_id")))
    rows = statement.rows({"session_id": SessionState.session_id.db_value(session_id)})
    if not rows:
        raise SessionNotFound("no session with id %r" % (session_id,))
    return rows[0]


def recent_messages(state_id, limit):
    """The last `limit` messages of a state's history, oldest first, sliced in the database."""
    check_id("state_id", state_id)
    _positive_int("limit", limit)
    database = _ready_database()
    items = backends.recent_messages(database, state_id, limit,
                                     SessionState.conversation_history._loads)
    if items is None:
        raise SessionNotFound("no session state with id %r" % (state_id,))
    return items


# -- writing --------------------------------------------------------------------------------

def append_messages(state_id, messages, expected_version=None):
    """Append messages to the history inside the database; returns the new version.

    Without expected_version, concurrent appends from many processes are all kept (the
    append is one UPDATE evaluated against the current row). With it, a stale version is
    refused with StaleStateError and nothing is appended.
    """
    check_id("state_id", state_id)
    if not isinstance(messages, (list, tuple)) or not messages:
        refuse("messages", "must be a non-empty list, got %r" % (messages,))
    if expected_version is not None:
        check_version(expected_version)
    database = _ready_database()
    check_json("messages", list(messages), backends.json_max_depth(database))
    history = SessionState.conversation_history
    checked = expected_version is not None
    # Compiled once per database, batch size (up to APPEND_COMPILED) and kind of call.
    if len(messages) <= APPEND_COMPILED:
        append = compiled(database, ("append", len(messages), checked),
                          lambda: _append_query(database, len(messages), checked))
        values = backends.append_values(database, history, list(messages))
        values["updated_at"] = SessionState.updated_at.db_value(utcnow())
        values["state_id"] = SessionState.id.db_value(state_id)
        values["expected_version"] = SessionState.version.db_value(expected_version)
        execute_append = lambda: append.rows_affected(values)  # noqa: E731
    else:
        query = _append_query(database, len(messages), checked, messages=list(messages),
                              state_id=state_id, expected_version=expected_version)
        execute_append = query.execute
    values_id = SessionState.id.db_value(state_id)
    read_version = compiled(database, "version", lambda: (
        SessionState.select(SessionState.version)
        .where(SessionState.id == param("state_id")).tuples()))

    def run():
        with backends.write_lock(database):
            if execute_append() != 1:
                if expected_version is None:
                    raise SessionNotFound("no session state with id %r" % (state_id,))
                raise missing_or_stale(state_id, expected_version)
            if expected_version is not None:
                return expected_version + 1
            # Still inside the transaction: our UPDATE holds the row, so this is our version.
            return read_version.rows({"state_id": values_id})[0][0]

    return backends.with_retries(run)


APPEND_COMPILED = 16  # batch sizes whose append statement is compiled once and kept


def _append_query(database, count, checked, messages=None, state_id=None,
                  expected_version=None):
    """The append UPDATE: with the given values, or with placeholders (statements.param)."""
    history = SessionState.conversation_history
    if messages is None:
        expression = backends.append_to_array(database, history, range(count), param)
        updated_at, state_id, expected_version = (
            param("updated_at"), param("state_id"), param("expected_version"))
    else:
        expression = backends.append_to_array(database, history, messages)
        updated_at = utcnow()
    where = SessionState.id == state_id
    if checked:
        where &= SessionState.version == expected_version
    return SessionState.update({
        history: expression,
        SessionState.updated_at: updated_at,
        SessionState.version: SessionState.version + 1,
    }).where(where)


def modify_state(state_id, fn, *, attempts=5):
    """Read the state, call fn(state) for a dict of changes, write them version-checked.

    The first attempts are optimistic: read, call fn outside any transaction, write with the
    version check, and on StaleStateError (someone wrote in between) read again. The last
    attempt holds the write lock (SQLite) or a row lock (servers) from the read to the write,
    so modify_state callers racing on one row always get through; a writer that bypasses
    modify_state can still win that race, and then StaleStateError is re-raised.
    Returns the new version. fn must not write to the database itself.
    """
    check_id("state_id", state_id)
    if not callable(fn):
        refuse("fn", "must be callable, got %r" % (fn,))
    _positive_int("attempts", attempts)
    database = _ready_database()

    def read_apply_write(lock):
        query = SessionState.select().where(SessionState.id == state_id)
        state = (backends.locked(query, database) if lock else query).first()
        if state is None:
            raise SessionNotFound("no session state with id %r" % (state_id,))
        changes = fn(state)
        if not isinstance(changes, dict):
            refuse("fn", "must return a dict of changes, returned %r" % (changes,))
        return bump(state.id, state.version, checked_changes(changes, database), utcnow())

    def under_lock():
        with backends.write_lock(database):
            return read_apply_write(lock=True)

    for attempt in range(attempts - 1):
        try:
            return backends.with_retries(lambda: read_apply_write(lock=False))
        except StaleStateError:
            time.sleep(random.uniform(0.0005, 0.002) * (attempt + 1))
    return backends.with_retries(under_lock)


# -- status changes -------------------------------------------------------------------------

def _transition(session_id, target):
    check_id("session_id", session_id)
    database = _ready_database()

    def run():
        with backends.write_lock(database):
            query = _latest_state_query(session_id, SessionState.id, SessionState.status,
                                        SessionState.version)
            state = backends.locked(query, database).first()
            if state is None:
                raise SessionNotFound("no session with id %r" % (session_id,))
            if target not in TRANSITIONS[state.status]:
                raise InvalidTransition(state.status, target, session_id)
            return bump(state.id, state.version, {"status": target}, utcnow())

    return backends.with_retries(run)


def suspend(session_id):
    """active -> suspended. Returns the state's new version."""
    return _transition(session_id, "suspended")


def resume(session_id):
    """suspended -> active. Returns the state's new version."""
    return _transition(session_id, "active")


def complete(session_id):
    """active or suspended -> completed (final). Returns the state's new version."""
    return _transition(session_id, "completed")


def expire(session_id):
    """active or suspended -> expired (final). Returns the state's new version."""
    return _transition(session_id, "expired")


# -- housekeeping ---------------------------------------------------------------------------

def expire_due(now=None):
    """Expire every active or suspended state whose expires_at has passed; returns the count.

    `now` (aware datetime) is the moment to compare with; the rows' updated_at is the real
    current time either way.
    """
    cutoff = check_timestamp("now", now) if now is not None else utcnow()
    database = _ready_database()

    def run():
        with backends.write_lock(database):
            due = (SessionState.select(SessionState.id, SessionState.session_id)
                   .where(SessionState.status.in_(LIVE)
                          & SessionState.expires_at.is_null(False)
                          & (SessionState.expires_at <= cutoff)))
            rows = list(backends.locked(due, database).tuples())
            written = utcnow()
            count = 0
            for batch in _chunks(rows):
                count += (SessionState.update(
                    status="expired", updated_at=written, version=SessionState.version + 1)
                    .where(SessionState.id.in_([state_id for state_id, _ in batch])
                           & SessionState.status.in_(LIVE))
                    .execute())
                Session.update(status="expired", last_active_at=written).where(
                    Session.id.in_([session_id for _, session_id in batch])).execute()
            return count

    return backends.with_retries(run)


def _purgeable(before, statuses):
    """The condition on Session.id that selects what purge(before, statuses) deletes.

    A session goes when it has a state in `statuses` last updated before `before`, and no
    state that is not. The database does the selection: no id travels to Python and back.
    """
    before = check_timestamp("before", before)
    if before is None:
        refuse("before", "is required (an aware datetime)")
    if isinstance(statuses, str) or not statuses or not all(s in STATUSES for s in statuses):
        refuse("statuses", "must be a non-empty list drawn from %s, got %r"
               % (", ".join(STATUSES), statuses))
    statuses = tuple(statuses)
    candidates = SessionState.select(SessionState.session_id).where(
        SessionState.status.in_(statuses) & (SessionState.updated_at < before))
    keep = SessionState.select(SessionState.session_id).where(
        ~SessionState.status.in_(statuses) | (SessionState.updated_at >= before)
        | SessionState.updated_at.is_null())
    return Session.id.in_(candidates) & Session.id.not_in(keep)


def purge(before, statuses=("completed", "expired")):
    """Delete sessions whose states are all in `statuses` and last updated before `before`.

    Their states go with them through ON DELETE CASCADE. Returns the number of sessions.
    """
    doomed = Session.delete().where(_purgeable(before, statuses))
    database = _ready_database()

    def run():
        with backends.write_lock(database):
            return doomed.execute()

    return backends.with_retries(run)


def purge_candidates(before, statuses=("completed", "expired")):
    """The ids of the sessions purge(before, statuses) would delete now, sorted; deletes nothing.

    For a dry run: the same selection as purge(), read without a lock.
    """
    query = Session.select(Session.id).where(_purgeable(before, statuses)).order_by(Session.id)
    _ready_database()
    return [row[0] for row in query.tuples()]


def delete_session(session_id):
    """Delete a session and (by cascade) its states; False if there was no such session."""
    check_id("session_id", session_id)
    _ready_database()
    query = Session.delete().where(Session.id == session_id)
    return backends.with_retries(query.execute) > 0


# -- listing --------------------------------------------------------------------------------

SUMMARY_COLUMNS = (
    SessionState.session_id.alias("session_id"), Session.name, Session.user_id, SessionState.mode,
    SessionState.status, SessionState.current_phase, SessionState.current_step,
    SessionState.updated_at, SessionState.id.alias("state_id"), SessionState.version,
)


def list_sessions(*, user_id=None, status=None, mode=None, limit=100, before=None):
    """Summaries of sessions, newest updated first, without reading the JSON columns.

    One row per session (its current state). Page with `before`: pass the last row's
    "cursor" (its updated_at and state id, so rows updated at the same instant are neither
    skipped nor repeated); a plain aware datetime lists the rows updated strictly earlier.
    """
    check_optional_text("user_id", user_id)
    if status is not None and status not in STATUSES:
        refuse("status", "%r is not one of %s" % (status, ", ".join(STATUSES)))
    if mode is not None:
        check_short_text("mode", mode, nullable=False)
    _positive_int("limit", limit, maximum=10_000)
    before, before_id = _listing_cursor(before)
    database = _ready_database()
    # Built with the values (the query is what peewee would run), compiled once per shape.
    query = _listing_query(status, mode, user_id, before, before_id, limit).dicts()
    shape = tuple(value is not None for value in (status, mode, user_id, before, before_id))
    statement = compiled(database, ("list_sessions",) + shape, lambda: _listing_query(
        *[param(name) if present else None for name, present in zip(LISTING_FILTERS, shape)],
        limit=param("limit")))
    values = {"status": status, "mode": mode, "user_id": user_id, "limit": limit,
              "before": SessionState.updated_at.db_value(before), "before_id": before_id}
    rows = statement.rows(values, query)
    for row in rows:
        row["cursor"] = (row["updated_at"], row["state_id"])
    return rows


LISTING_FILTERS = ("status", "mode", "user_id", "before", "before_id")


def _listing_cursor(before):
    """(updated_at, state_id or None) from a row's cursor or a plain datetime."""
    if isinstance(before, (tuple, list)):
        if len(before) != 2:
            refuse("before", "must be a datetime or a row's cursor (updated_at, state_id)")
        check_id("before", before[1])
        return check_timestamp("before", before[0]), before[1]
    return check_timestamp("before", before), None


def _listing_query(status, mode, user_id, before, before_id, limit):
    newer = SessionState.alias("newer")
    same_time = newer.updated_at == SessionState.updated_at
    has_newer_state = (newer.select(pw.SQL("1")).where(
        (newer.session_id == SessionState.session_id)
        & ((newer.updated_at > SessionState.updated_at)  # the order of get_state
           | (same_time & (newer.created_at > SessionState.created_at))
           | (same_time & (newer.created_at == SessionState.created_at)
              & (newer.id > SessionState.id)))))
    where = ~pw.fn.EXISTS(has_newer_state)
    if status is not None:
        where &= SessionState.status == status
    if mode is not None:
        where &= SessionState.mode == mode
    if user_id is not None:
        where &= Session.user_id == user_id
    if before is not None and before_id is not None:
        where &= ((SessionState.updated_at < before)
                  | ((SessionState.updated_at == before) & (SessionState.id < before_id)))
    elif before is not None:
        where &= SessionState.updated_at < before
    return (SessionState.select(*SUMMARY_COLUMNS)
            .join(Session, on=(SessionState.session_id == Session.id))
            .where(where)
            .order_by(SessionState.updated_at.desc(), SessionState.id.desc())
            .limit(limit))
