"""Listing sessions: one summary row per session (its current state), newest updated first."""

from . import execution
from .migrate import ready_database
from .models import Session, SessionState, has_newer_state, read_timestamp
from .statements import compiled, param
from .validation import (STATUSES, check_id, check_optional_text, check_positive_int,
                         check_short_text, check_timestamp, refuse)

MAX_LIMIT = 10_000
SUMMARY_COLUMNS = (
    SessionState.session_id.alias("session_id"), Session.name, Session.user_id, SessionState.mode,
    SessionState.status, SessionState.current_phase, SessionState.current_step,
    SessionState.updated_at, SessionState.id.alias("state_id"), SessionState.version,
)
SUMMARY_KEYS = ("session_id", "name", "user_id", "mode", "status", "current_phase",
                "current_step", "updated_at", "state_id", "version")
FILTERS = ("status", "mode", "user_id", "before", "before_id")


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
    check_positive_int("limit", limit, maximum=MAX_LIMIT)
    before, before_id = _cursor(before)
    database = ready_database()
    values = {"status": status, "mode": mode, "user_id": user_id, "limit": limit,
              "before": SessionState.updated_at.db_value(before), "before_id": before_id}
    shape = tuple(values[name] is not None for name in FILTERS)
    statement = compiled(database, ("list_sessions",) + shape, lambda: _query(shape))
    rows = execution.read(database, lambda: statement.rows(values))
    return [_summary(row) for row in rows]


def _summary(row):
    summary = dict(zip(SUMMARY_KEYS, row))
    summary["updated_at"] = read_timestamp(summary["updated_at"])
    summary["cursor"] = (summary["updated_at"], summary["state_id"])
    return summary


def _cursor(before):
    """(updated_at, state_id or None) from a row's cursor or a plain datetime."""
    if isinstance(before, (tuple, list)):
        if len(before) != 2:
            refuse("before", "must be a datetime or a row's cursor (updated_at, state_id)")
        check_id("before", before[1])
        return check_timestamp("before", before[0]), before[1]
    return check_timestamp("before", before), None


def _query(shape):
    """The listing SELECT with a placeholder for each filter present in `shape`."""
    present = dict(zip(FILTERS, shape))
    where = ~has_newer_state(SessionState)
    if present["status"]:
        where &= SessionState.status == param("status")
    if present["mode"]:
        where &= SessionState.mode == param("mode")
    if present["user_id"]:
        where &= Session.user_id == param("user_id")
    if present["before"] and present["before_id"]:
        where &= ((SessionState.updated_at < param("before"))
                  | ((SessionState.updated_at == param("before"))
                     & (SessionState.id < param("before_id"))))
    elif present["before"]:
        where &= SessionState.updated_at < param("before")
    return (SessionState.select(*SUMMARY_COLUMNS)
            .join(Session, on=(SessionState.session_id == Session.id))
            .where(where)
            .order_by(SessionState.updated_at.desc(), SessionState.id.desc())
            .limit(param("limit")))
