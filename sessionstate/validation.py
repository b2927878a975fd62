"""Checks every value before it is written, so a refusal never leaves half a write behind.

The databases disagree on what they accept (PostgreSQL's jsonb refuses the NUL character,
MariaDB stops at 32 levels of nesting, SQLite answers NaN with "malformed JSON"), so we refuse
anything one of them would refuse, with a message that names the field and the path inside it.
"""

import contextlib
import contextvars
import datetime as dt
import gc
import math
import re

from .errors import InvalidStateData

try:
    import orjson
except ImportError:  # pragma: no cover - a dependency; without it every value is walked
    orjson = None

STATUSES = ("active", "suspended", "completed", "expired")
# Which status may follow which; completed and expired are final.
TRANSITIONS = {
    "active": {"suspended", "completed", "expired"},
    "suspended": {"active", "completed", "expired"},
    "completed": set(),
    "expired": set(),
}
SHORT_TEXT_LIMIT = 50  # mode and current_phase are String(50) in the specification
INT64 = 2**63
_UTC = dt.timezone.utc

# The NUL character (jsonb cannot store it) and lone surrogates (not encodable as UTF-8).
_UNSTORABLE_CHARACTER = re.compile("[\x00\ud800-\udfff]")


def _path_text(field, path):
    return field + "".join("[%r]" % step for step in path)


def _refuse(field, path, problem):
    raise InvalidStateData("%s: %s" % (_path_text(field, path), problem))


def refuse(field, problem):
    """Raise InvalidStateData for a whole argument (not a path inside a JSON value)."""
    _refuse(field, (), problem)


if orjson is not None:
    # Strict: refuse (TypeError) subclasses, dataclasses, datetimes, integers beyond 53 bits,
    # non-string keys and lone surrogates, instead of converting them.
    _STRICT = (orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS
               | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_STRICT_INTEGER)
_JSON_TYPES = frozenset((dict, list, tuple, str, int, float, bool, type(None)))
_CONTAINERS = frozenset((dict, list, tuple))


def _plainly_storable(value, max_depth):
    """True only if check_json's walk would accept `value`: a fast path in C for big values.

    Strict orjson refuses most of what the walk refuses: non-string keys, integers beyond 53
    bits (well inside 64), lone surrogates, values nested deeper than it goes (254 levels),
    and most non-JSON types. A NUL character shows as its escape in the output. What orjson
    would still write is checked by _only_json_types: the types it converts (UUID, Enum,
    Fragment), NaN and the infinities (which it writes as null), and a depth limit below
    orjson's own (MariaDB's). Anything doubtful returns False, and the walk decides, with
    its precise error.
    """
    if orjson is None or not isinstance(value, (dict, list)):
        return False
    try:
        encoded = orjson.dumps(value, option=_STRICT)
    except TypeError:
        return False
    return b"\\u0000" not in encoded and _only_json_types(value, max_depth)


def _only_json_types(value, max_depth):
    """True if every object inside `value` is of an exact JSON type, no float is NaN or
    infinite, and no container is nested deeper than `max_depth`.

    gc.get_referents() lists, at C speed, the items of the lists and tuples and the values of
    the dicts of one level (the keys too, unless all are strings: orjson has checked those),
    so each level costs two C calls rather than a Python loop over its items.
    """
    pause = _PAUSE.get()
    level = [value]
    depth = 1  # of the containers in `level`, counted as check_json counts
    while level:
        types = set(map(type, level))
        if not types <= _JSON_TYPES:
            return False
        if depth > max_depth and not types.isdisjoint(_CONTAINERS):
            return False
        if float in types and not all(math.isfinite(item) for item in level
                                      if type(item) is float):
            return False
        level = gc.get_referents(*level)
        depth += 1
        if pause is not None and len(level) > LARGE_LEVEL:
            pause()
    return True


# A check of a large value calls this between its levels (see pausing()); None: no pause.
_PAUSE = contextvars.ContextVar("sessionstate_validation_pause", default=None)
LARGE_LEVEL = 20_000  # items in one level of a value: about 2-3 ms of checking each 10,000


@contextlib.contextmanager
def pausing(pause):
    """Within it, the check of a large value calls pause() between its levels (the async
    API lets its event loop run there: a 5 MB history's check took 20-30 ms in one go)."""
    token = _PAUSE.set(pause)
    try:
        yield
    finally:
        _PAUSE.reset(token)


def check_json(field, value, max_depth):
    """Refuse a value that JSON cannot hold exactly; the error names the offending path.

    Iterative rather than recursive, so that a deeply nested value gets our error instead of
    Python's RecursionError.
    """
    if _plainly_storable(value, max_depth):
        return
    stack = [(value, (), 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            match = _UNSTORABLE_CHARACTER.search(item)
            if match:
                _refuse(field, path, "string contains the character %r at position %d, which "
                        "not every database can store" % (match.group(), match.start()))
        elif item is None or isinstance(item, bool):
            continue
        elif isinstance(item, int):
            if not -INT64 <= item < INT64:
                _refuse(field, path, "integer %d does not fit in 64 bits" % item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                _refuse(field, path, "%r is not a JSON number (NaN and infinities are not "
                        "allowed)" % item)
        elif isinstance(item, (dict, list, tuple)):
            if depth + 1 > max_depth:
                _refuse(field, path, "nested deeper than %d levels, the limit of this "
                        "database" % max_depth)
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        _refuse(field, path, "key %r is not a string (JSON object keys must "
                                "be strings)" % (key,))
                    stack.append((child, path + (key,), depth + 1))
                    stack.append((key, path + (key,), depth))
            else:
                stack.extend((child, path + (i,), depth + 1) for i, child in enumerate(item))
        else:
            _refuse(field, path, "%s is not a JSON value" % type(item).__name__)


INT32 = 2**31  # version and current_step are INTEGER columns: 32 bits on the servers
TEXT_LIMIT = 255  # sessions.name and sessions.user_id
ID_LIMIT = 36  # every id is a String(36)


def check_short_text(field, value, *, nullable):
    """mode and current_phase: a non-empty string of at most 50 characters."""
    if value is None and nullable:
        return
    if not isinstance(value, str) or not value.strip():
        _refuse(field, (), "must be a non-empty string, got %r" % (value,))
    if len(value) > SHORT_TEXT_LIMIT:
        _refuse(field, (), "is %d characters long; the limit is %d"
                % (len(value), SHORT_TEXT_LIMIT))
    _check_characters(field, value)


def _check_characters(field, value):
    if _UNSTORABLE_CHARACTER.search(value):
        _refuse(field, (), "contains a NUL character or a lone surrogate")


def check_status(value, field="status"):
    if value not in STATUSES:
        _refuse(field, (), "%r is not one of %s" % (value, ", ".join(STATUSES)))


def check_transition(current, target):
    """The one rule for status changes; True if `current` may become `target`."""
    return target in TRANSITIONS.get(current, ())


def check_step(value, field="current_step"):
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        _refuse(field, (), "must be an integer, got %r" % (value,))
    if not -INT32 <= value < INT32:
        _refuse(field, (), "%d is outside %d to %d, the column's 32-bit integer"
                % (value, -INT32, INT32 - 1))


def check_timestamp(field, value):
    """A timezone-aware datetime, returned in UTC; naive datetimes are ambiguous, refused."""
    if value is None:
        return None
    if not isinstance(value, dt.datetime):
        _refuse(field, (), "must be a datetime, got %r" % (value,))
    if value.tzinfo is _UTC:
        return value  # already aware UTC (utcnow()'s), as astimezone would return it
    if value.tzinfo is None or value.utcoffset() is None:
        _refuse(field, (), "must be timezone-aware (for example datetime.now(timezone.utc))")
    try:
        return value.astimezone(dt.timezone.utc)
    except OverflowError:
        _refuse(field, (), "%s is outside the range of datetimes once moved to UTC" % value)


def check_id(field, value):
    if not isinstance(value, str) or not value or len(value) > ID_LIMIT:
        _refuse(field, (), "must be an id string of at most %d characters, got %r"
                % (ID_LIMIT, value))
    _check_characters(field, value)


def check_optional_text(field, value, limit=TEXT_LIMIT):
    """name and user_id: None, or a string of at most `limit` storable characters."""
    if value is None:
        return
    if not isinstance(value, str) or len(value) > limit:
        _refuse(field, (), "must be a string of at most %d characters, got %r" % (limit, value))
    _check_characters(field, value)


def check_version(value, field="expected_version"):
    if isinstance(value, bool) or not isinstance(value, int):
        _refuse(field, (), "must be an integer, got %r" % (value,))
    if not 1 <= value < INT32:
        _refuse(field, (), "%d is outside 1 to %d" % (value, INT32 - 1))


def check_positive_int(field, value, maximum=INT32 - 1):
    """limit, attempts and the like: an integer from 1 to `maximum`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        _refuse(field, (), "must be a positive integer, got %r" % (value,))
    if value > maximum:
        _refuse(field, (), "must be at most %d, got %d" % (maximum, value))


# The history is appended to inside the database, which needs an array; the context is a
# key-value mapping by definition. plan_data and meta may be any JSON value.
CONTAINER_TYPES = {"conversation_history": (list, tuple), "context_variables": (dict,)}


def _json_rule(field):
    def check(value, max_depth):
        check_json(field, value, max_depth)
        expected = CONTAINER_TYPES.get(field)
        if value is not None and expected and not isinstance(value, expected):
            _refuse(field, (), "must be a %s or None, got %s"
                    % ("list" if list in expected else "dict", type(value).__name__))
    return check


def _plain(check):
    return lambda field: (lambda value, max_depth: check(field, value))


# One rule per column: (value, max_depth) -> None, or raise InvalidStateData naming the column.
_ID = _plain(check_id)
_TEXT = _plain(check_optional_text)
_TIMESTAMP = _plain(check_timestamp)
SESSION_RULES = {
    "id": _ID("id"),
    "name": _TEXT("name"),
    "user_id": _TEXT("user_id"),
    "status": _plain(lambda field, value: check_status(value, field))("status"),
    "meta": lambda value, max_depth: check_json("meta", value, max_depth),
    "created_at": _TIMESTAMP("created_at"),
    "last_active_at": _TIMESTAMP("last_active_at"),
}
STATE_RULES = {
    "id": _ID("id"),
    "session_id": _ID("session_id"),
    "mode": lambda value, max_depth: check_short_text("mode", value, nullable=False),
    "conversation_history": _json_rule("conversation_history"),
    "context_variables": _json_rule("context_variables"),
    "plan_data": _json_rule("plan_data"),
    "current_phase": lambda value, max_depth: check_short_text("current_phase", value,
                                                               nullable=True),
    "current_step": lambda value, max_depth: check_step(value),
    "status": SESSION_RULES["status"],
    "created_at": _TIMESTAMP("created_at"),
    "updated_at": _TIMESTAMP("updated_at"),
    "expires_at": _TIMESTAMP("expires_at"),
    "version": lambda value, max_depth: check_version(value, "version"),
}
TIMESTAMP_COLUMNS = frozenset(("created_at", "updated_at", "expires_at", "last_active_at"))


def check_row(rules, values, max_depth):
    """Check each column present in `values` by its rule; returns them, timestamps in UTC."""
    checked = dict(values)
    for name, value in values.items():
        rule = rules[name]
        if name in TIMESTAMP_COLUMNS:  # its rule is check_timestamp: checked and converted once
            checked[name] = check_timestamp(name, value)
        else:
            rule(value, max_depth)
    return checked


def check_state_values(values, max_depth):
    """Check the SessionState columns present in `values` (see check_row)."""
    return check_row(STATE_RULES, values, max_depth)


def check_session_values(values, max_depth):
    """Check the Session columns present in `values` (see check_row)."""
    return check_row(SESSION_RULES, values, max_depth)
