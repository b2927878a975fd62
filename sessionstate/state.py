"""The version-bump update: the one way a stored session state changes.

Every write is a single ``UPDATE ... WHERE id = ? AND version = ?`` that also sets
``updated_at`` and ``version = version + 1``. If it matches no row, someone else wrote first
(or the row is gone): the caller gets StaleStateError or SessionNotFound, never a silent
lost update. On success nothing is read back, since histories can be megabytes.
"""

from . import backends
from .db import get_database
from .errors import InvalidStateData, InvalidTransition, SessionNotFound, StaleStateError
from .migrate import ensure_migrated
from .models import Session, SessionState, bound_database, utcnow
from .statements import compiled, param, plain
from .validation import (JSON_FIELDS, STATUSES, TRANSITIONS, check_id, check_state_values,
                         check_version)

# What update_state may change: the state's data and progress, its status and expiry.
UPDATABLE_FIELDS = (
    "conversation_history",
    "context_variables",
    "plan_data",
    "current_phase",
    "current_step",
    "status",
    "expires_at",
)


def checked_changes(changes, database):
    unknown = sorted(set(changes) - set(UPDATABLE_FIELDS))
    if unknown:
        raise InvalidStateData(
            "cannot update %s; updatable fields are: %s"
            % (", ".join(unknown), ", ".join(UPDATABLE_FIELDS))
        )
    return check_state_values(changes, backends.json_max_depth(database))


def missing_or_stale(state_id, expected_version, target_status=None):
    """After an UPDATE matched no row: the error that says why."""
    row = (SessionState.select(SessionState.version, SessionState.status)
           .where(SessionState.id == state_id).tuples().first())
    if row is None:
        return SessionNotFound("no session state with id %r" % (state_id,))
    actual, status = row
    if actual != expected_version or target_status is None:
        return StaleStateError(state_id, expected_version, actual)
    return InvalidTransition(status, target_status)


def statuses_allowing(target):
    """The statuses from which a state may move to `target` (itself included)."""
    return tuple(status for status in STATUSES if status == target or target in TRANSITIONS[status])


def bump(state_id, expected_version, changes, now):
    """Run the version-bump UPDATE for already-checked `changes`; returns the new version.

    The UPDATE for a given set of fields is compiled once per database (statements); a value
    that converts to an SQL expression rather than a parameter takes peewee's own path.
    """
    if "status" in changes:
        return _bump_with_status(state_id, expected_version, changes, now)
    fields = SessionState._meta.fields
    names = tuple(sorted(changes))
    values = {name: fields[name].db_value(value) for name, value in changes.items()}
    if plain(values.values()):
        values["updated_at"] = SessionState.updated_at.db_value(now)
        values["state_id"] = SessionState.id.db_value(state_id)
        values["expected_version"] = SessionState.version.db_value(expected_version)
        statement = compiled(bound_database(SessionState), ("bump",) + names,
                             lambda: _bump_query(names))
        if statement.rows_affected(values) != 1:
            raise missing_or_stale(state_id, expected_version)
        return expected_version + 1
    values = {fields[name]: value for name, value in changes.items()}
    values[SessionState.updated_at] = now
    values[SessionState.version] = SessionState.version + 1
    query = SessionState.update(values).where(
        (SessionState.id == state_id) & (SessionState.version == expected_version)
    )
    if query.execute() != 1:
        raise missing_or_stale(state_id, expected_version)
    return expected_version + 1


def _bump_with_status(state_id, expected_version, changes, now):
    """The version-bump UPDATE of a status change: the lifecycle is kept, the session follows.

    The UPDATE also requires the current status to allow the new one (completed and expired
    are final), and the session row takes the same status, in the same transaction.
    """
    target = changes["status"]
    values = {SessionState._meta.fields[name]: value for name, value in changes.items()}
    values[SessionState.updated_at] = now
    values[SessionState.version] = SessionState.version + 1
    query = SessionState.update(values).where(
        (SessionState.id == state_id) & (SessionState.version == expected_version)
        & SessionState.status.in_(statuses_allowing(target)))
    owner = SessionState.select(SessionState.session_id).where(SessionState.id == state_id)
    with SessionState._meta.database.atomic():
        if query.execute() != 1:
            raise missing_or_stale(state_id, expected_version, target)
        Session.update(status=target, last_active_at=now).where(Session.id == owner).execute()
    return expected_version + 1


def _bump_query(names):
    values = {SessionState._meta.fields[name]: param(name) for name in names}
    values[SessionState.updated_at] = param("updated_at")
    values[SessionState.version] = SessionState.version + 1
    return SessionState.update(values).where(
        (SessionState.id == param("state_id"))
        & (SessionState.version == param("expected_version")))


def update_state(state_id, expected_version, **changes):
    """Write `changes` to a state if it is still at `expected_version`; returns the new version.

    Raises StaleStateError (with .actual_version) when another writer got there first,
    SessionNotFound when there is no such state, InvalidStateData for bad input; in each
    case the database is unchanged.
    """
    check_id("state_id", state_id)
    check_version(expected_version)
    database = get_database()
    checked = checked_changes(changes, database)
    ensure_migrated(database)
    return backends.with_retries(lambda: bump(state_id, expected_version, checked, utcnow()))


def save_changes(state):
    """SessionState.save() of a stored instance: its changed fields, version-checked."""
    # version and updated_at are ours to set; any other field outside UPDATABLE_FIELDS is
    # refused by checked_changes below. The JSON fields are always written: an edit made in
    # place (state.context_variables["k"] = v) does not mark them dirty.
    names = [name for name in state._dirty if name not in ("version", "updated_at")]
    names += [name for name in JSON_FIELDS if name not in names]
    dirty = {name: state.__data__.get(name) for name in names}
    database = state._meta.database
    checked = checked_changes(dirty, database)
    ensure_migrated(database)
    now = utcnow()
    state.version = backends.with_retries(
        lambda: bump(state.id, state.version, checked, now))
    state.updated_at = now
    state._dirty.clear()
    return 1
