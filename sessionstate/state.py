"""One state's reads and version-checked writes: get, update, append, tail, modify.

Every write is the version-bump UPDATE (models.bump) or the in-database append; none reads
a state back after writing it, since histories can be megabytes.
"""

import functools
import random

from . import dialects, execution
from .errors import SessionNotFound, StaleStateError
from .db import get_database
from .migrate import ensure_migrated, ready_database
from .models import (SessionState, bump, check_changes, latest_state_query, load_state,
                     missing_or_stale, state_columns, utcnow)
from .statements import Read, Statement, compiled, param
from .validation import check_id, check_json, check_positive_int, check_version, refuse

APPEND_COMPILED = 16  # batch sizes whose append statement is compiled once and kept
# modify_state's attempts: enough for a handful of workers racing on one state to get through
# (each lost race costs one re-read); raise it for more writers on one state.
MODIFY_ATTEMPTS = 50


def update_state(state_id, expected_version, **changes):
    """Write `changes` to a state if it is still at `expected_version`; returns the new version.

    Raises StaleStateError (with .actual_version) when another writer got there first,
    SessionNotFound when there is no such state, InvalidStateData for bad input; in each
    case the database is unchanged.
    """
    check_id("state_id", state_id)
    check_version(expected_version)
    database = get_database()
    checked = check_changes(changes, dialects.of(database).json_max_depth)
    ensure_migrated(database)
    now = utcnow()
    return execution.write(database, lambda: bump(state_id, expected_version, checked, now),
                           single="status" not in checked)


def get_state(session_id):
    """The session's current state: its most recently updated one. SessionNotFound if none."""
    read = get_state_read(session_id)
    return read.result(execution.read(read.statement.database, read.rows))


def get_state_read(session_id):
    """get_state as a statements.Read: validated, its statement compiled, nothing run yet."""
    check_id("session_id", session_id)
    database = ready_database()
    statement = compiled(database, "get_state", lambda: latest_state_query(
        param("session_id"), *state_columns(database)))
    return Read(statement, {"session_id": session_id},
                functools.partial(_current_state, session_id))


def _current_state(session_id, rows):
    if not rows:
        raise SessionNotFound("no session with id %r" % (session_id,))
    return load_state(rows[0])


def recent_messages(state_id, limit):
    """The last `limit` messages of a state's history, oldest first, sliced in the database."""
    check_id("state_id", state_id)
    check_positive_int("limit", limit)
    database = ready_database()
    dialect = dialects.of(database)
    items = execution.read(database, lambda: dialect.tail(database, state_id, limit))
    if items is None:
        raise SessionNotFound("no session state with id %r" % (state_id,))
    return items


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
    database = ready_database()
    dialect = dialects.of(database)
    check_json("messages", list(messages), dialect.json_max_depth)
    checked = expected_version is not None
    returning = dialect.update_returning and not checked
    shape = (len(messages), checked, returning)
    build = lambda: _history_query(  # noqa: E731
        dialect.append_expression(SessionState.conversation_history, len(messages), param),
        checked, returning)
    statement = (compiled(database, ("append",) + shape, build)
                 if len(messages) <= APPEND_COMPILED else Statement(database, build()))
    values = dialect.append_values(messages)
    values.update(updated_at=SessionState.updated_at.db_value(utcnow()), state_id=state_id,
                  expected_version=expected_version)

    return _write_history(database, statement, values, state_id, expected_version,
                          returning)


def _write_history(database, statement, values, state_id, expected_version, returning):
    """Run a history UPDATE (append, pop, clear); returns the state's new version."""
    def run():
        if returning:  # the new version comes back from the UPDATE itself
            rows = statement.rows(values)
            if not rows:
                raise SessionNotFound("no session state with id %r" % (state_id,))
            return rows[0][0]
        if statement.rows_affected(values) != 1:
            if expected_version is None:
                raise SessionNotFound("no session state with id %r" % (state_id,))
            raise missing_or_stale(state_id, expected_version)
        if expected_version is not None:
            return expected_version + 1
        return _version_of(database, state_id)

    checked = expected_version is not None
    return execution.write(database, run, single=returning or checked)


def _history_query(history_value, checked, returning):
    """An UPDATE of the history to `history_value` that bumps the version, with placeholders
    for the state id, the expected version (when checked) and updated_at."""
    where = SessionState.id == param("state_id")
    if checked:
        where &= SessionState.version == param("expected_version")
    query = SessionState.update({
        SessionState.conversation_history: history_value,
        SessionState.updated_at: param("updated_at"),
        SessionState.version: SessionState.version + 1,
    }).where(where)
    return query.returning(SessionState.version) if returning else query


def pop_message(state_id):
    """Remove the history's last message and return it, atomically; None when it is empty.

    Version-checked: of two callers racing, each gets a different message (the loser reads
    again), and none is lost.
    """
    check_id("state_id", state_id)
    database = ready_database()
    dialect = dialects.of(database)
    statement = compiled(database, "pop", lambda: _history_query(
        dialect.remove_last_expression(SessionState.conversation_history), True, False))
    for attempt in range(MODIFY_ATTEMPTS):
        rows = execution.read(database, lambda: database.execute_sql(
            dialect.last_item_sql, (state_id,)).fetchall())
        if not rows:
            raise SessionNotFound("no session state with id %r" % (state_id,))
        version, item, present = dialects.last_item(rows[0])
        if not present:
            return None
        values = {"state_id": state_id, "expected_version": version,
                  "updated_at": SessionState.updated_at.db_value(utcnow())}
        try:
            _write_history(database, statement, values, state_id, version, False)
            return item
        except StaleStateError as conflict:
            if attempt == MODIFY_ATTEMPTS - 1:
                raise conflict
            dialects.of(database).sleep(backoff(attempt))


def clear_messages(state_id):
    """Empty the history (the state and its session stay); returns the new version."""
    check_id("state_id", state_id)
    database = ready_database()
    returning = dialects.of(database).update_returning
    statement = compiled(database, ("clear", returning), lambda: _history_query(
        param("empty"), False, returning))
    values = {"empty": SessionState.conversation_history.db_value([]), "state_id": state_id,
              "updated_at": SessionState.updated_at.db_value(utcnow())}
    return _write_history(database, statement, values, state_id, None, returning)


def _version_of(database, state_id):
    """The state's version, read inside the append's transaction (our UPDATE holds the row)."""
    statement = compiled(database, "version", lambda: SessionState.select(
        SessionState.version).where(SessionState.id == param("state_id")))
    return statement.rows({"state_id": state_id})[0][0]


def backoff(attempt):
    """A random pause before retry `attempt` after a lost race: up to 1 ms, doubling to 64."""
    return random.uniform(0, 0.001 * min(2 ** attempt, 64))


def modify_state(state_id, fn, *, attempts=MODIFY_ATTEMPTS):
    """Read the state, call fn(state) for a dict of changes, write them version-checked.

    fn runs outside any transaction and lock (it may be a slow LLM call). When another
    writer got in between (StaleStateError), the state is read again and fn called again,
    up to `attempts` times in all, with a growing random pause; the last StaleStateError is
    re-raised. Returns the new version. fn must not write to the database itself.
    """
    check_id("state_id", state_id)
    if not callable(fn):
        refuse("fn", "must be callable, got %r" % (fn,))
    check_positive_int("attempts", attempts)
    database = ready_database()
    max_depth = dialects.of(database).json_max_depth
    statement = compiled(database, "state_by_id", lambda: SessionState.select(
        *state_columns(database)).where(SessionState.id == param("state_id")))
    for attempt in range(attempts):
        rows = execution.read(database, lambda: statement.rows({"state_id": state_id}))
        if not rows:
            raise SessionNotFound("no session state with id %r" % (state_id,))
        state = load_state(rows[0])
        changes = fn(state)
        if not isinstance(changes, dict):
            refuse("fn", "must return a dict of changes, returned %r" % (changes,))
        checked = check_changes(changes, max_depth)
        now = utcnow()
        try:
            return execution.write(database, lambda: bump(state.id, state.version, checked, now),
                                   single="status" not in checked)
        except StaleStateError:
            if attempt == attempts - 1:
                raise
            dialects.of(database).sleep(backoff(attempt))
