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

from . import dialects, execution
from .db import get_database
from .errors import AlreadyExists, ImportConflict, InvalidExport, InvalidStateData
from .errors import SessionNotFound
from .migrate import ensure_migrated, ready_database
from .models import Session, SessionState, insert
from .validation import (SESSION_RULES, STATE_RULES, TIMESTAMP_COLUMNS, check_id,
                         check_session_values, check_state_values)

FORMAT = "sessionstate-export"
FORMAT_VERSION = 1
DOCUMENT_KEYS = ("format", "format_version", "session", "states")
SESSION_COLUMNS = tuple(SESSION_RULES)
STATE_COLUMNS = tuple(STATE_RULES)
# A document must import into any backend: MariaDB's DATETIME is the narrowest range.
YEARS = (1000, 9999)
PORTABLE_DEPTH = min(dialect.json_max_depth for dialect in dialects.DIALECTS)

# ISO 8601 with an explicit offset (or Z) and at most microseconds, which is what the
# databases store: anything finer would be silently cut, so it is refused instead.
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")


# -- export ---------------------------------------------------------------------------------

def _iso(value):
    return value.isoformat(timespec="microseconds") if value is not None else None


def _row(instance):
    return {name: _iso(value) if name in TIMESTAMP_COLUMNS else value
            for name, value in instance.column_values().items()}


def export_session(session_id):
    """The export document (a dict) of a session and all its states; SessionNotFound if none."""
    check_id("session_id", session_id)
    database = ready_database()

    def read():
        session = Session.get_or_none(Session.id == session_id)
        states = list(SessionState.select().where(SessionState.session_id == session_id)
                      .order_by(SessionState.created_at, SessionState.id))
        return session, states

    session, states = execution.read(database, read)
    if session is None:
        raise SessionNotFound("no session with id %r" % (session_id,))
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "session": _row(session),
        "states": [_row(state) for state in states],
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
            raise InvalidExport("the import file is not UTF-8 text: %s" % exc) from exc
    try:
        return json.loads(data, object_pairs_hook=_no_duplicate_keys,
                          parse_constant=_no_constants)
    except RecursionError as exc:
        raise InvalidExport("the import file is not usable JSON: nested too deeply") from exc
    except ValueError as exc:
        raise InvalidExport("the import file is not valid JSON: %s" % exc) from exc


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


def _timestamp(where, value):
    """An aware UTC datetime from the document's ISO 8601 text (None stays None)."""
    if value is None:
        return None
    if not isinstance(value, str) or not _TIMESTAMP.fullmatch(value):
        _refuse(where, "must be an ISO 8601 timestamp with an offset such as "
                "'2024-05-01T12:00:00.000000+00:00', got %s" % _short(value))
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        parsed = parsed.astimezone(dt.timezone.utc)
    except (ValueError, OverflowError) as exc:
        _refuse(where, "%s is not a valid timestamp: %s" % (_short(value), exc))
    if not YEARS[0] <= parsed.year <= YEARS[1]:
        _refuse(where, "%s is outside the years %d to %d that every backend can store"
                % (_short(value), YEARS[0], YEARS[1]))
    return parsed


def _short(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _checked_row(where, item, columns, check, max_depth):
    """One row of the document, checked by the library's own column rules."""
    _check_keys(where, item, columns)
    row = {name: _timestamp("%s.%s" % (where, name), value)
           if name in TIMESTAMP_COLUMNS else value for name, value in item.items()}
    try:
        return check(row, max_depth)
    except InvalidStateData as exc:
        raise InvalidExport("invalid export document: %s.%s" % (where, exc)) from exc


def check_document(document, max_depth=PORTABLE_DEPTH):
    """Validate a parsed export document; returns (session row, state rows) ready to insert.

    Every key, type and value is checked with the rules the library applies to its own
    writes (validation); the first problem raises InvalidExport naming where it is.
    """
    _check_keys(None, document, DOCUMENT_KEYS)
    if document["format"] != FORMAT:
        _refuse("format", "expected %r, got %s" % (FORMAT, _short(document["format"])))
    if type(document["format_version"]) is not int or document["format_version"] != FORMAT_VERSION:
        _refuse("format_version", "this version of sessionstate reads version %d, got %s"
                % (FORMAT_VERSION, _short(document["format_version"])))
    session = _checked_row("session", document["session"], SESSION_COLUMNS,
                           check_session_values, max_depth)
    for name in ("created_at", "last_active_at"):
        if session[name] is None:
            _refuse("session.%s" % name, "must be a timestamp, got null")
    if not isinstance(document["states"], list):
        _refuse("states", "must be an array, got %s" % _json_type(document["states"]))
    states, seen = [], set()
    for index, item in enumerate(document["states"]):
        where = "states[%d]" % index
        state = _checked_row(where, item, STATE_COLUMNS, check_state_values, max_depth)
        if state["id"] in seen:
            _refuse(where + ".id", "%r appears twice in the document" % state["id"])
        seen.add(state["id"])
        if state["session_id"] != session["id"]:
            _refuse(where + ".session_id", "%s is not the session's id %r"
                    % (_short(state["session_id"]), session["id"]))
        states.append(state)
    return session, states


# -- import ---------------------------------------------------------------------------------

def _existing(model, ids):
    found = []
    for start in range(0, len(ids), INSERT_BATCH):
        batch = ids[start:start + INSERT_BATCH]
        found += [row[0] for row in model.select(model.id).where(model.id.in_(batch)).tuples()]
    return sorted(found)


INSERT_BATCH = 100  # ids per IN (...) list


def import_session(document):
    """Create the session and states of an export document in the current database.

    Everything is validated first; then, in one transaction, the ids are checked to be free
    and the rows inserted with their values exactly as given. Returns (session id, number of
    states). InvalidExport or ImportConflict leave the database unchanged.
    """
    database = get_database()
    session, states = check_document(document, dialects.of(database).json_max_depth)
    ensure_migrated(database)

    def run():
        if _existing(Session, [session["id"]]):
            raise ImportConflict("session %s already exists in the target database; "
                                 "nothing imported" % session["id"])
        taken = _existing(SessionState, [state["id"] for state in states])
        if taken:
            shown = ", ".join(taken[:3]) + (" and %d more" % (len(taken) - 3)
                                            if len(taken) > 3 else "")
            raise ImportConflict("session state(s) %s already exist in the target "
                                 "database; nothing imported" % shown)
        insert(Session, session)
        for state in states:
            insert(SessionState, state)

    try:
        execution.write(database, run)
    except (SessionNotFound, AlreadyExists) as exc:
        if isinstance(exc, ImportConflict):
            raise
        # An id taken between our check and our insert, or two ids of the document that the
        # database's collation holds equal.
        raise ImportConflict("session %s conflicts with rows of the target database (%s); "
                             "nothing imported" % (session["id"], exc)) from exc
    return session["id"], len(states)
