"""A session's life: create it, change its status, expire, purge and delete sessions.

Status changes follow the one rule of validation.TRANSITIONS, also applied by
update_state(status=...); the session row's status follows its current state's.
"""

import datetime as dt
import functools

import peewee as pw

from . import dialects, execution
from .errors import InvalidTransition, SessionNotFound
from .db import get_database
from .migrate import ensure_migrated, ready_database
from .models import (Session, SessionState, bump, has_newer_state, insert_step,
                     latest_state_query, new_id, utcnow)
from .statements import Write, compiled, param
from .validation import (STATUSES, check_id, check_session_values, check_state_values,
                         check_short_text, check_timestamp, check_transition, refuse)

LIVE = ("active", "suspended")
ID_BATCH = 500  # ids per IN (...) list, well under every backend's parameter limit


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


def create_session(mode, *, name=None, user_id=None, meta=None, ttl=None,
                   conversation_history=None, context_variables=None, plan_data=None,
                   session_id=None):
    """Create a session and its active state in one transaction; returns the SessionState.

    `session_id` chooses the session's id (else a new uuid4); AlreadyExists if it is taken.
    """
    write = create_session_write(
        mode, name=name, user_id=user_id, meta=meta, ttl=ttl,
        conversation_history=conversation_history, context_variables=context_variables,
        plan_data=plan_data, session_id=session_id)
    return execution.write(write.database, write.run)


def create_session_write(mode, *, name=None, user_id=None, meta=None, ttl=None,
                         conversation_history=None, context_variables=None, plan_data=None,
                         session_id=None):
    """create_session as a statements.Write: validated, its two rows bound, nothing written."""
    check_short_text("mode", mode, nullable=False)
    if session_id is not None:
        check_id("session_id", session_id)
    database = get_database()
    max_depth = dialects.of(database).json_max_depth
    now = utcnow()
    expires_at = _expiry(now, ttl)
    session_row = check_session_values({
        "id": new_id() if session_id is None else session_id, "name": name,
        "user_id": user_id, "status": "active", "meta": meta, "created_at": now,
        "last_active_at": now}, max_depth)
    state_row = check_state_values(SessionState.new_columns(
        session_row["id"], mode, now,
        conversation_history=[] if conversation_history is None else conversation_history,
        context_variables={} if context_variables is None else context_variables,
        plan_data=plan_data, expires_at=expires_at), max_depth)
    ensure_migrated(database)
    return Write(database, [insert_step(Session, session_row),
                            insert_step(SessionState, state_row)],
                 functools.partial(SessionState.from_columns, state_row))


# -- status changes -------------------------------------------------------------------------

def _transition(session_id, target):
    check_id("session_id", session_id)
    database = ready_database()
    dialect = dialects.of(database)

    def run():
        query = dialect.lock_rows(latest_state_query(
            session_id, SessionState.id, SessionState.status, SessionState.version))
        rows = list(query.tuples())
        if not rows:
            raise SessionNotFound("no session with id %r" % (session_id,))
        state_id, status, version = rows[0]
        if not check_transition(status, target):
            raise InvalidTransition(status, target, session_id)
        return bump(state_id, version, {"status": target}, utcnow())

    return execution.write(database, run)


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

    `now` (aware datetime) is the moment to compare with. A session's current state stays its
    current one: only a state that is current gets the real time as updated_at (and moves
    its session's status); an older state is expired with its updated_at kept.
    """
    cutoff = check_timestamp("now", now) if now is not None else utcnow()
    database = ready_database()
    dialect = dialects.of(database)

    def run():
        due = dialect.lock_rows(
            SessionState.select(SessionState.id, SessionState.session_id,
                                has_newer_state(SessionState))
            .where(SessionState.status.in_(LIVE) & SessionState.expires_at.is_null(False)
                   & (SessionState.expires_at <= cutoff)))
        rows = list(due.tuples())
        written = utcnow()
        current = [(state_id, session_id) for state_id, session_id, newer in rows if not newer]
        older = [state_id for state_id, _, newer in rows if newer]
        count = 0
        for batch in _chunks(current):
            count += _expire_states([state_id for state_id, _ in batch], written)
            Session.update(status="expired", last_active_at=written).where(
                Session.id.in_([session_id for _, session_id in batch])).execute()
        for batch in _chunks(older):
            count += _expire_states(batch, None)
        return count

    return execution.write(database, run)


def _expire_states(state_ids, written):
    """Expire the live states among `state_ids`; updated_at set to `written` unless None."""
    values = {SessionState.status: "expired", SessionState.version: SessionState.version + 1}
    if written is not None:
        values[SessionState.updated_at] = written
    return (SessionState.update(values)
            .where(SessionState.id.in_(state_ids) & SessionState.status.in_(LIVE))
            .execute())


def _purgeable(before, statuses):
    """The condition on Session.id that selects what purge(before, statuses) deletes.

    A session goes when it has a state in `statuses` last updated before `before`, and no
    state that is not. The database does the selection from the index on (status,
    updated_at), checking each candidate's other states by its session: the cost grows with
    what is deleted, not with what is kept.
    """
    before = check_timestamp("before", before)
    if before is None:
        refuse("before", "is required (an aware datetime)")
    if isinstance(statuses, str) or not statuses or not all(s in STATUSES for s in statuses):
        refuse("statuses", "must be a non-empty list drawn from %s, got %r"
               % (", ".join(STATUSES), statuses))
    # The statuses go in as literals: drawn from STATUSES (checked above), and a planner that
    # sees them picks a better plan than for parameters (PostgreSQL: 50 ms against 61 for
    # W6's purge of 1,000 among 100,000).
    listed = pw.SQL("(%s)" % ", ".join("'%s'" % status for status in statuses))
    other, newer = SessionState.alias("other"), SessionState.alias("newer")
    # Two NOT EXISTS rather than one with an OR: each is a simple anti-join.
    other_status = other.select(pw.SQL("1")).where(
        (other.session_id == SessionState.session_id)
        & pw.Expression(other.status, pw.OP.NOT_IN, listed))
    recent = newer.select(pw.SQL("1")).where(
        (newer.session_id == SessionState.session_id)
        & ((newer.updated_at >= before) | newer.updated_at.is_null()))
    candidates = SessionState.select(SessionState.session_id).where(
        pw.Expression(SessionState.status, pw.OP.IN, listed) & (SessionState.updated_at < before)
        & ~pw.fn.EXISTS(other_status) & ~pw.fn.EXISTS(recent))
    return Session.id.in_(candidates)


def purge(before, statuses=("completed", "expired")):
    """Delete sessions whose states are all in `statuses` and last updated before `before`.

    Their states go with them through ON DELETE CASCADE. Returns the number of sessions.
    """
    condition = _purgeable(before, statuses)
    database = ready_database()
    return execution.write(database, lambda: Session.delete().where(condition).execute(),
                           single=True)


def purge_candidates(before, statuses=("completed", "expired")):
    """The ids of the sessions purge(before, statuses) would delete now, sorted; deletes nothing."""
    query = Session.select(Session.id).where(_purgeable(before, statuses)).order_by(Session.id)
    database = ready_database()
    return execution.read(database, lambda: [row[0] for row in query.tuples()])


def delete_session(session_id):
    """Delete a session and (by cascade) its states; False if there was no such session."""
    check_id("session_id", session_id)
    database = ready_database()
    statement = compiled(database, "delete_session", lambda: Session.delete().where(
        Session.id == param("session_id")))
    return execution.write(database, lambda: statement.rows_affected(
        {"session_id": session_id}), single=True) > 0
