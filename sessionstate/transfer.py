"""Export and import: one session and all its states as a self-describing JSON document.

The document carries a format marker and version, the ``sessions`` row and every row of
``session_states`` for it, with every column as stored: timestamps as ISO 8601 with their
offset (microseconds kept), JSON columns as the JSON values they hold, version numbers as
they are. Importing it into another database (of any backend) recreates the same rows.

    document = export_session(session_id)      # a dict; dumps(document) is the file's text
    import_session(loads(text))                # validates everything, then one transaction

An import is refused (InvalidExport) unless the whole document is well formed and every value
is storable, and refused (ImportConflict) if the session or any of its states already exists
in the target database. Either way nothing is written.
"""

import datetime as dt
import json
import re

import peewee as pw

from . import backends
from .db import get_database
from .errors import ImportConflict, InvalidExport, InvalidStateData, SessionNotFound
from .migrate import ensure_migrated
from .models import Session, SessionState
from .validation import check_id, check_json, check_state_values, check_status

FORMAT = "sessionstate-export"
FORMAT_VERSION = 1
DOCUMENT_KEYS = ("format", "format_version", "session", "states")
SESSION_COLUMNS = ("id", "name", "user_id", "status", "meta", "created_at", "last_active_at")
STATE_COLUMNS = ("id", "session_id", "mode", "conversation_history", "context_variables",
                 "plan_data", "current_phase", "current_step", "status", "created_at",
                 "updated_at", "expires_at", "version")
TIMESTAMPS = {"created_at", "last_active_at", "updated_at", "expires_at"}
TEXT_LIMIT = 255  # sessions.name and sessions.user_id
INT32 = 2**31  # version and current_step are 32-bit INTEGER columns
# MariaDB's DATETIME is the narrowest range of the three backends.
YEARS = (1000, 9999)
INSERT_BATCH = 100  # rows per INSERT, well under every backend's parameter limit

# ISO 8601 with an explicit offset (or Z) and at most microseconds, which is what the
# databases store: anything finer would be silently cut, so it is refused instead.
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


# -- export ---------------------------------------------------------------------------------

def _iso(value):
    return value.isoformat(timespec="microseconds") if value is not None else None


def _row(instance, columns):
    row = {}
    for name in columns:
        value = instance.__data__.get(type(instance)._meta.combined[name].name)
        row[name] = _iso(value) if name in TIMESTAMPS else value
    return row


def export_session(session_id):
    """The export document (a dict) of a session and all its states; SessionNotFound if none."""
    check_id("session_id", session_id)
    ensure_migrated(get_database())
    session = Session.get_or_none(Session.id == session_id)
    if session is None:
        raise SessionNotFound("no session with id %r" % (session_id,))
    states = (SessionState.select().where(SessionState.session_id == session_id)
              .order_by(SessionState.created_at, SessionState.id))
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "session": _row(session, SESSION_COLUMNS),
        "states": [_row(state, STATE_COLUMNS) for state in states],
    }


def dumps(document):
    """The document as the text of an export file (UTF-8, indented, newline-terminated)."""
    return json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


# -- reading a document ---------------------------------------------------------------------

def _refuse(where, problem):
    """InvalidExport naming the place in the document (None: the document as a whole)."""
    raise InvalidExport("invalid export document: %s%s" % (where + ": " if where else "",
                                                           problem))


def _no_duplicate_keys(pairs):
    result = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("duplicate key %r in an object" % (key,))
        result[key] = value
    return result


def _no_constants(name):
    raise ValueError("%s is not a JSON value" % name)


def loads(data):
    """Parse an export file's bytes or text strictly: UTF-8, JSON, no duplicate keys, no NaN.

    Returns the parsed value; its shape is checked by import_session. InvalidExport otherwise.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InvalidExport("the import file is not UTF-8 text: %s" % exc) from None
    try:
        return json.loads(data, object_pairs_hook=_no_duplicate_keys,
                          parse_constant=_no_constants)
    except RecursionError:
        raise InvalidExport("the import file is not usable JSON: nested too deeply") from None
    except ValueError as exc:
        raise InvalidExport("the import file is not valid JSON: %s" % exc) from None


# -- validating a document ------------------------------------------------------------------

def _check_keys(where, value, expected):
    if not isinstance(value, dict):
        _refuse(where, "must be a JSON object, got %s" % _json_type(value))
    missing = [key for key in expected if key not in value]
    extra = sorted(key for key in value if key not in expected)
    if missing:
        _refuse(where, "missing key(s): %s" % ", ".join(missing))
    if extra:
        _refuse(where, "unexpected key(s): %s" % ", ".join(extra))


def _json_type(value):
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "an array", dict: "an object"}.get(type(value), type(value).__name__)


def _timestamp(where, value, nullable):
    """An aware UTC datetime from the document's ISO 8601 text."""
    if value is None:
        if nullable:
            return None
        _refuse(where, "must be a timestamp, got null")
    if not isinstance(value, str) or not _TIMESTAMP.fullmatch(value):
        _refuse(where, "must be an ISO 8601 timestamp with an offset such as "
                "'2024-05-01T12:00:00.000000+00:00', got %s" % _short(value))
    try:
        parsed = dt.datetime.fromisoformat(value).astimezone(dt.timezone.utc)
    except (ValueError, OverflowError) as exc:
        _refuse(where, "%s is not a valid timestamp: %s" % (_short(value), exc))
    if not YEARS[0] <= parsed.year <= YEARS[1]:
        _refuse(where, "%s is outside the years %d to %d that every backend can store"
                % (_short(value), YEARS[0], YEARS[1]))
    return parsed


def _short(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _text(where, value, nullable=True):
    if value is None and nullable:
        return
    if not isinstance(value, str) or len(value) > TEXT_LIMIT or _UNSTORABLE.search(value):
        _refuse(where, "must be %sa string of at most %d characters without NUL, got %s"
                % ("null or " if nullable else "", TEXT_LIMIT, _short(value)))


def _identifier(where, value):
    if not isinstance(value, str) or _UNSTORABLE.search(value or ""):
        _refuse(where, "must be an id string, got %s" % _short(value))
    try:
        check_id("id", value)
    except InvalidStateData:
        _refuse(where, "must be an id string of 1 to 36 characters, got %s" % _short(value))


def _int32(where, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int):
        _refuse(where, "must be an integer, got %s" % _short(value))
    if not minimum <= value < INT32:
        _refuse(where, "%d is outside %d to %d" % (value, minimum, INT32 - 1))


def _rephrase(where, exc):
    """A validation message ("mode: must be ...") placed in the document ("states[0].mode")."""
    raise InvalidExport("invalid export document: %s.%s" % (where, exc)) from None


def check_document(document, max_depth=min(backends.JSON_MAX_DEPTH.values())):
    """Validate a parsed export document; returns (session row, state rows) ready to insert.

    Every key, type and value is checked with the same rules the library applies to its own
    writes; the first problem raises InvalidExport naming where it is.
    """
    _check_keys(None, document, DOCUMENT_KEYS)
    if document["format"] != FORMAT:
        _refuse("format", "expected %r, got %s" % (FORMAT, _short(document["format"])))
    if type(document["format_version"]) is not int or document["format_version"] != FORMAT_VERSION:
        _refuse("format_version", "this version of sessionstate reads version %d, got %s"
                % (FORMAT_VERSION, _short(document["format_version"])))

    source = document["session"]
    _check_keys("session", source, SESSION_COLUMNS)
    session = dict(source)
    _identifier("session.id", source["id"])
    _text("session.name", source["name"])
    _text("session.user_id", source["user_id"])
    try:
        check_status(source["status"])
        check_json("meta", source["meta"], max_depth)
    except InvalidStateData as exc:
        _rephrase("session", exc)
    for name in ("created_at", "last_active_at"):
        session[name] = _timestamp("session.%s" % name, source[name], nullable=False)

    if not isinstance(document["states"], list):
        _refuse("states", "must be an array, got %s" % _json_type(document["states"]))
    states, seen = [], set()
    for index, item in enumerate(document["states"]):
        where = "states[%d]" % index
        _check_keys(where, item, STATE_COLUMNS)
        state = dict(item)
        _identifier(where + ".id", item["id"])
        if item["id"] in seen:
            _refuse(where + ".id", "%r appears twice in the document" % item["id"])
        seen.add(item["id"])
        if item["session_id"] != source["id"]:
            _refuse(where + ".session_id", "%s is not the session's id %r"
                    % (_short(item["session_id"]), source["id"]))
        for name in ("created_at", "updated_at", "expires_at"):
            state[name] = _timestamp("%s.%s" % (where, name), item[name], nullable=True)
        _int32(where + ".version", item["version"], 1)
        if item["current_step"] is not None:
            _int32(where + ".current_step", item["current_step"], -INT32)
        try:
            state = check_state_values(state, max_depth)
        except InvalidStateData as exc:
            _rephrase(where, exc)
        states.append(state)
    return session, states


# -- import ---------------------------------------------------------------------------------

def _existing(model, ids):
    found = []
    for start in range(0, len(ids), INSERT_BATCH):
        batch = ids[start:start + INSERT_BATCH]
        found += [row[0] for row in model.select(model.id).where(model.id.in_(batch)).tuples()]
    return sorted(found)


def import_session(document):
    """Create the session and states of an export document in the current database.

    Everything is validated first; then, in one transaction, the ids are checked to be free
    and the rows inserted with their values exactly as given. Returns (session id, number of
    states). InvalidExport or ImportConflict leave the database unchanged.
    """
    database = get_database()
    session, states = check_document(document, backends.json_max_depth(database))
    ensure_migrated(database)
    state_ids = [state["id"] for state in states]
    try:
        with backends.write_lock(database):
            if _existing(Session, [session["id"]]):
                raise ImportConflict("session %s already exists in the target database; "
                                     "nothing imported" % session["id"])
            taken = _existing(SessionState, state_ids)
            if taken:
                shown = ", ".join(taken[:3]) + (" and %d more" % (len(taken) - 3)
                                                if len(taken) > 3 else "")
                raise ImportConflict("session state(s) %s already exist in the target "
                                     "database; nothing imported" % shown)
            Session.insert({Session._meta.combined[k]: v for k, v in session.items()}).execute()
            for start in range(0, len(states), INSERT_BATCH):
                rows = [{SessionState._meta.combined[k]: v for k, v in state.items()}
                        for state in states[start:start + INSERT_BATCH]]
                SessionState.insert_many(rows).execute()
    except pw.IntegrityError as exc:
        # An id taken between our check and our insert, or two ids of the document that the
        # database's collation holds equal (MariaDB compares case-insensitively).
        raise ImportConflict("session %s conflicts with rows of the target database (%s); "
                             "nothing imported" % (session["id"], " ".join(str(exc).split()))
                             ) from exc
    return session["id"], len(states)
