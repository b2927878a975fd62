"""The lifecycle functions: create, read, append, modify, status changes, housekeeping, list."""

import datetime as dt
import uuid

import peewee as pw
import pytest

import sessionstate as ss
from sessionstate import (InvalidStateData, InvalidTransition, Session, SessionNotFound,
                          SessionState, StaleStateError)

UTC = dt.timezone.utc


def now():
    return dt.datetime.now(UTC)


def snapshot(database):
    """Every row of both tables, to show that a refused call changed nothing."""
    rows = []
    for table in ("sessions", "session_states"):
        rows.append(sorted(map(repr, database.execute_sql("SELECT * FROM %s" % table))))
    return rows


# -- create_session / get_state -------------------------------------------------------------

def test_create_session_writes_the_session_and_its_active_state(migrated, api):
    state = api.create_session("copilot", name="n", user_id="u1", meta={"k": [1]}, ttl=60,
                              conversation_history=[{"role": "user", "content": "hi"}],
                              context_variables={"a": 1}, plan_data={"steps": []})
    session = Session.get_by_id(state.session_id)
    assert (session.name, session.user_id, session.meta, session.status) == (
        "n", "u1", {"k": [1]}, "active")
    loaded = api.get_state(state.session_id)
    assert loaded.id == state.id
    assert loaded.to_dict() == state.to_dict()
    assert loaded.status == "active" and loaded.version == 1
    assert loaded.expires_at - loaded.created_at == dt.timedelta(seconds=60)
    assert loaded.conversation_history == [{"role": "user", "content": "hi"}]


def test_new_ids_are_distinct_version_4_uuids(migrated, api):
    states = [api.create_session("copilot") for _ in range(50)]
    ids = [state.id for state in states] + [state.session_id for state in states]
    assert len(set(ids)) == 100
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # lower-case hex, hyphens where uuid4's are
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_create_session_defaults_and_timedelta_ttl(migrated, api):
    state = api.create_session("planning-control", ttl=dt.timedelta(hours=1))
    loaded = api.get_state(state.session_id)
    assert loaded.conversation_history == [] and loaded.context_variables == {}
    assert loaded.plan_data is None and loaded.current_phase == "init"
    assert loaded.expires_at - loaded.created_at == dt.timedelta(hours=1)
    assert api.create_session("copilot").expires_at is None


@pytest.mark.parametrize("kwargs, named", [
    (dict(mode=""), "mode"),
    (dict(mode="x" * 51), "mode"),
    (dict(mode="copilot", ttl=0), "ttl"),
    (dict(mode="copilot", ttl="60"), "ttl"),
    (dict(mode="copilot", name=5), "name"),
    (dict(mode="copilot", meta={"f": float("nan")}), "meta['f']"),
    (dict(mode="copilot", conversation_history=[{"x": {1, 2}}]), "conversation_history[0]['x']"),
])
def test_create_session_refuses_bad_input_and_writes_nothing(migrated, kwargs, named, api):
    before = snapshot(migrated)
    with pytest.raises(InvalidStateData) as error:
        api.create_session(**kwargs)
    assert named in str(error.value)
    assert snapshot(migrated) == before


def test_get_state_returns_the_most_recently_updated_state(migrated, api):
    first = api.create_session("copilot")
    second = SessionState.create_for_session(first.session_id, "review")
    second.save()
    assert api.get_state(first.session_id).id == second.id  # created later, same instant or later
    api.update_state(first.id, 1, current_step=1)
    assert api.get_state(first.session_id).id == first.id


def test_get_state_of_an_unknown_session(migrated, api):
    with pytest.raises(SessionNotFound, match="nope"):
        api.get_state("nope")


# -- append_messages / recent_messages ------------------------------------------------------

def test_append_messages_keeps_order_and_bumps_the_version(migrated, api):
    state = api.create_session("copilot", conversation_history=[{"n": 0}])
    assert api.append_messages(state.id, [{"n": 1}, {"n": 2}]) == 2
    assert api.append_messages(state.id, [{"n": 3}], expected_version=2) == 3
    loaded = SessionState.get_by_id(state.id)
    assert loaded.conversation_history == [{"n": i} for i in range(4)]
    assert loaded.version == 3 and loaded.updated_at > state.updated_at


def test_append_messages_of_every_json_kind_and_to_a_null_history(migrated, api):
    Session.create(id="s1")
    migrated.execute_sql("INSERT INTO session_states (id, session_id, mode) "
                         "VALUES ('st1', 's1', 'copilot')")
    values = [{"a": [1, {"b": None}]}, [1, 2], "text", 7, 2.5, True, False, None, "ü✓"]
    assert api.append_messages("st1", values) == 2
    assert SessionState.get_by_id("st1").conversation_history == values
    assert api.recent_messages("st1", 4) == values[-4:]
    assert api.recent_messages("st1", 100) == values


def test_append_messages_in_large_batches(migrated, api):
    state = api.create_session("copilot")
    batch = [{"i": i} for i in range(150)]  # more than one SQLite function call holds
    api.append_messages(state.id, batch)
    assert SessionState.get_by_id(state.id).conversation_history == batch


def test_append_messages_with_a_stale_version_appends_nothing(migrated, api):
    state = api.create_session("copilot", conversation_history=[{"n": 0}])
    api.append_messages(state.id, [{"n": 1}])
    with pytest.raises(StaleStateError) as error:
        api.append_messages(state.id, [{"n": "lost?"}], expected_version=1)
    assert error.value.actual_version == 2
    assert SessionState.get_by_id(state.id).conversation_history == [{"n": 0}, {"n": 1}]


def test_append_messages_refusals(migrated, api):
    state = api.create_session("copilot")
    before = snapshot(migrated)
    with pytest.raises(SessionNotFound):
        api.append_messages("missing", [{"n": 1}])
    with pytest.raises(InvalidStateData, match="messages"):
        api.append_messages(state.id, [])
    with pytest.raises(InvalidStateData, match="messages"):
        api.append_messages(state.id, {"role": "user"})
    with pytest.raises(InvalidStateData, match=r"messages\[1\]\['content'\]"):
        api.append_messages(state.id, [{"ok": 1}, {"content": "a\x00b"}])
    assert snapshot(migrated) == before


def test_recent_messages(migrated, api):
    state = api.create_session("copilot", conversation_history=[{"n": i} for i in range(10)])
    assert api.recent_messages(state.id, 3) == [{"n": 7}, {"n": 8}, {"n": 9}]
    assert api.recent_messages(state.id, 1) == [{"n": 9}]
    empty = api.create_session("copilot")
    assert api.recent_messages(empty.id, 5) == []
    with pytest.raises(SessionNotFound):
        api.recent_messages("missing", 5)
    with pytest.raises(InvalidStateData, match="limit"):
        api.recent_messages(state.id, 0)


# -- modify_state ---------------------------------------------------------------------------

def test_modify_state_applies_the_function_and_bumps(migrated, api):
    state = api.create_session("copilot", context_variables={"counter": 0})

    def increment(current):
        return {"context_variables": {"counter": current.context_variables["counter"] + 1},
                "current_step": (current.current_step or 0) + 1}

    assert api.modify_state(state.id, increment) == 2
    assert api.modify_state(state.id, increment) == 3
    loaded = SessionState.get_by_id(state.id)
    assert loaded.context_variables == {"counter": 2} and loaded.current_step == 2


def test_modify_state_retries_after_a_concurrent_write(migrated, api):
    state = api.create_session("copilot", context_variables={"counter": 0})
    calls = []

    def racing(current):
        calls.append(current.version)
        if len(calls) == 1:  # someone else (a sync writer) writes between our read and write
            ss.update_state(state.id, current.version, current_phase="other writer")
        return {"context_variables": {"counter": current.context_variables["counter"] + 1}}

    assert api.modify_state(state.id, racing) == 3
    assert calls == [1, 2]
    loaded = SessionState.get_by_id(state.id)
    assert loaded.current_phase == "other writer"  # the other write is not lost
    assert loaded.context_variables == {"counter": 1}


def test_modify_state_gives_up_after_its_attempts(migrated, api):
    state = api.create_session("copilot")
    calls = []

    def always_racing(current):
        calls.append(1)
        ss.update_state(state.id, current.version, current_step=len(calls))
        return {"current_phase": "mine"}

    with pytest.raises(StaleStateError):
        api.modify_state(state.id, always_racing, attempts=3)
    assert len(calls) == 3
    assert SessionState.get_by_id(state.id).current_phase == "init"


def test_modify_state_refusals(migrated, api):
    state = api.create_session("copilot")
    before = snapshot(migrated)
    with pytest.raises(SessionNotFound):
        api.modify_state("missing", lambda s: {})
    with pytest.raises(InvalidStateData, match="fn"):
        api.modify_state(state.id, lambda s: ["not", "a", "dict"])
    with pytest.raises(InvalidStateData, match="mode"):
        api.modify_state(state.id, lambda s: {"mode": "other"})
    with pytest.raises(InvalidStateData, match="attempts"):
        api.modify_state(state.id, lambda s: {}, attempts=0)
    assert snapshot(migrated) == before


# -- status changes -------------------------------------------------------------------------

def test_transitions_follow_the_lifecycle(migrated, api):
    state = api.create_session("copilot")
    sid = state.session_id
    assert api.suspend(sid) == 2
    assert Session.get_by_id(sid).status == "suspended"
    assert api.resume(sid) == 3
    assert api.get_state(sid).status == "active"
    assert api.complete(sid) == 4
    session = Session.get_by_id(sid)
    assert session.status == "completed" and session.last_active_at > state.created_at
    for final_change in (ss.resume, ss.suspend, ss.expire, ss.complete):
        with pytest.raises(InvalidTransition) as error:
            final_change(sid)
        assert error.value.current == "completed"
        assert "completed" in str(error.value)
    assert api.get_state(sid).version == 4


@pytest.mark.parametrize("change, target", [
    (ss.resume, "active"), (ss.suspend, "suspended")])
def test_invalid_transitions_name_both_statuses(migrated, change, target, api):
    state = api.create_session("copilot")
    if target == "suspended":
        api.suspend(state.session_id)
    with pytest.raises(InvalidTransition) as error:
        change(state.session_id)
    assert (error.value.current, error.value.requested) == (target, target)


def test_expire_from_suspended_and_unknown_sessions(migrated, api):
    state = api.create_session("copilot")
    api.suspend(state.session_id)
    api.expire(state.session_id)
    assert api.get_state(state.session_id).status == "expired"
    assert Session.get_by_id(state.session_id).status == "expired"
    with pytest.raises(SessionNotFound):
        api.suspend("missing")


# -- housekeeping ---------------------------------------------------------------------------

def test_expire_due_across_the_clock_boundary(migrated, api):
    soon = api.create_session("copilot", ttl=60)
    later = api.create_session("copilot", ttl=3600)
    suspended = api.create_session("copilot", ttl=60)
    api.suspend(suspended.session_id)
    done = api.create_session("copilot", ttl=60)
    api.complete(done.session_id)
    forever = api.create_session("copilot")

    assert api.expire_due() == 0
    just_before = soon.expires_at - dt.timedelta(microseconds=1)
    assert api.expire_due(now=just_before) == 0
    assert api.expire_due(now=soon.expires_at + dt.timedelta(seconds=1)) == 2
    assert api.get_state(soon.session_id).status == "expired"
    assert api.get_state(suspended.session_id).status == "expired"
    assert Session.get_by_id(soon.session_id).status == "expired"
    assert api.get_state(later.session_id).status == "active"
    assert api.get_state(done.session_id).status == "completed"
    assert api.get_state(forever.session_id).status == "active"
    assert api.expire_due(now=soon.expires_at + dt.timedelta(seconds=1)) == 0
    with pytest.raises(InvalidStateData, match="now"):
        api.expire_due(now=dt.datetime(2030, 1, 1))  # naive: ambiguous


def test_purge_deletes_old_finished_sessions_with_their_states(migrated, api):
    finished = [api.create_session("copilot") for _ in range(3)]
    for state in finished[:2]:
        api.complete(state.session_id)
    api.expire(finished[2].session_id)
    active = api.create_session("copilot")
    cutoff = now() + dt.timedelta(seconds=1)
    fresh = api.create_session("copilot")
    api.complete(fresh.session_id)
    api.update_state(fresh.id, 2, current_phase="after the cutoff")
    migrated.execute_sql("UPDATE session_states SET updated_at = %s WHERE id = %s" % (
        "'2999-01-01 00:00:00'" if ss.dialects.of(migrated).name != "postgresql"
        else "'2999-01-01 00:00:00+00'", "'%s'" % fresh.id))

    assert api.purge(cutoff, statuses=("completed",)) == 2
    assert api.purge(cutoff) == 1
    assert Session.select().count() == 2
    remaining = {s.session_id for s in SessionState.select()}
    assert remaining == {active.session_id, fresh.session_id}
    assert api.purge(cutoff) == 0
    with pytest.raises(InvalidStateData, match="statuses"):
        api.purge(cutoff, statuses=("bogus",))
    with pytest.raises(InvalidStateData, match="before"):
        api.purge(None)


def test_purge_of_thousands(migrated, api):
    for i in range(1500):
        state = api.create_session("copilot")
        if i % 3:
            api.complete(state.session_id)
    assert api.purge(now() + dt.timedelta(seconds=1)) == 1000
    assert Session.select().count() == 500
    assert SessionState.select().count() == 500


def test_delete_session(migrated, api):
    state = api.create_session("copilot")
    assert api.delete_session(state.session_id) is True
    assert api.delete_session(state.session_id) is False
    assert SessionState.select().where(SessionState.id == state.id).count() == 0


# -- list_sessions --------------------------------------------------------------------------

def test_list_sessions_newest_first_with_filters_and_paging(migrated, api):
    made = []
    for i in range(7):
        made.append(api.create_session("copilot" if i % 2 else "review", name="s%d" % i,
                                      user_id="u%d" % (i % 3)))
    api.complete(made[0].session_id)
    rows = api.list_sessions()
    assert [r["name"] for r in rows] == ["s0", "s6", "s5", "s4", "s3", "s2", "s1"]
    assert set(rows[0]) >= {"session_id", "name", "user_id", "mode", "status",
                            "current_phase", "current_step", "updated_at"}
    assert rows[0]["status"] == "completed" and rows[0]["updated_at"].tzinfo is not None
    assert [r["name"] for r in api.list_sessions(status="active", mode="copilot")] == [
        "s5", "s3", "s1"]
    assert [r["name"] for r in api.list_sessions(user_id="u0")] == ["s0", "s6", "s3"]
    page1 = api.list_sessions(limit=3)
    page2 = api.list_sessions(limit=3, before=page1[-1]["updated_at"])
    page3 = api.list_sessions(limit=3, before=page2[-1]["updated_at"])
    assert [r["name"] for r in page1 + page2 + page3] == [r["name"] for r in rows]


def test_list_sessions_shows_a_session_once_with_its_current_state(migrated, api):
    state = api.create_session("copilot", name="one")
    newer = SessionState.create_for_session(state.session_id, "review", current_phase="p2")
    newer.save()
    api.update_state(newer.id, 1, current_step=3)
    rows = api.list_sessions()
    assert len(rows) == 1 and rows[0]["mode"] == "review" and rows[0]["current_step"] == 3


def test_list_sessions_refusals(migrated, api):
    with pytest.raises(InvalidStateData, match="status"):
        api.list_sessions(status="bogus")
    with pytest.raises(InvalidStateData, match="limit"):
        api.list_sessions(limit=0)


def test_list_sessions_uses_indexes_on_sqlite(tmp_path):
    """The query plan reads through indexes, never a full scan of a table (checked on SQLite)."""
    database = ss.connect("sqlite:///%s" % (tmp_path / "plans.db"))
    ss.migrate(database)
    for filters in ({}, {"status": "active"}, {"user_id": "u"},
                    {"status": "active", "mode": "copilot"}):
        sql, params = _listing_sql(filters)
        plan = [row[3] for row in database.execute_sql("EXPLAIN QUERY PLAN " + sql, params)]
        text = " | ".join(plan)
        assert "USING INDEX" in text, text
        assert not any(step.startswith("SCAN") and "INDEX" not in step for step in plan), text
        if filters.get("status"):
            assert "idx_session_states_status_updated" in text, text
        if filters.get("status"):
            assert "TEMP B-TREE" not in text, text  # the index gives the order: no sort
        if not filters:  # the spec's updated_at index gives the order; ids sort within ties
            assert "TEMP B-TREE FOR ORDER BY" not in text, text


def test_get_state_reads_the_sessions_rows_through_an_index_whatever_the_statistics(
        migrated, backend):
    """get_state's plan finds the session's states through an index on session_id, before
    the table has statistics and after: never by walking every state in updated_at order
    until one of the session's turns up. With only the specification's indexes, PostgreSQL
    chose that walk when it expected many states per session (measured: 4.8 ms at 9,000
    states, against 0.1 ms); here the session asked for holds the 100 oldest of 10,000."""
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    stamp = SessionState.updated_at.db_value
    sessions = ["s-%03d" % n for n in range(100)]
    states = [("t-%05d" % n, sessions[n // 100], stamp(now + dt.timedelta(seconds=n)))
              for n in range(10_000)]
    with migrated.atomic():
        Session.insert_many([{"id": sid, "name": "n", "status": "active",
                              "created_at": stamp(now), "last_active_at": stamp(now)}
                             for sid in sessions]).execute()
        for batch in pw.chunked(states, 1000):
            SessionState.insert_many([{"id": tid, "session_id": sid, "mode": "copilot",
                                       "status": "active", "created_at": at, "updated_at": at,
                                       "version": 1} for tid, sid, at in batch]).execute()
    mark = "?" if backend == "sqlite" else "%s"
    sql, params = _get_state_sql("s-000")
    # LIMIT 1 is in the SQL: with LIMIT $2, PostgreSQL judged the prepared statement's
    # generic plan dearer than a custom one and planned every call anew (+80 µs a call).
    assert list(params) == ["s-000"] and sql.endswith(" LIMIT 1"), (sql, params)
    literal = sql.replace(mark, "'s-000'")  # one call's own plan
    plans = [_plan(migrated, backend, literal)]
    migrated.execute_sql("ANALYZE" if backend != "mysql" else "ANALYZE TABLE session_states")
    plans.append(_plan(migrated, backend, literal))
    for plan in plans:
        assert "session_id" in plan and "idx_session_states_updated" not in plan, plan
        assert "Seq Scan" not in plan and "SCAN t1" not in plan, plan
    assert ss.get_state("s-000").id == "t-00099"


def _plan(database, backend, sql):
    if backend == "sqlite":
        return " | ".join(row[3] for row in database.execute_sql("EXPLAIN QUERY PLAN " + sql))
    cursor = database.execute_sql("EXPLAIN " + sql)
    if backend == "postgresql":
        return " | ".join(row[0] for row in cursor)
    names = [column[0] for column in cursor.description]
    return " | ".join("%s=%s" % item for row in cursor for item in zip(names, row))


def _get_state_sql(session_id):
    """The SQL and parameters get_state sends for `session_id`."""
    return _sql_of(lambda: ss.get_state(session_id))


def _listing_sql(filters):
    """The SQL and parameters the database sees when list_sessions runs with `filters`."""
    return _sql_of(lambda: ss.list_sessions(**filters))


def _sql_of(call):
    """The one statement call() sends, once the schema check has run (and is remembered)."""
    database = ss.get_database()
    call()
    seen = []
    original = database.execute_sql

    def recording(sql, params=None, *args, **kwargs):
        seen.append((sql, params))
        return original(sql, params, *args, **kwargs)

    database.execute_sql = recording
    try:
        call()
    finally:
        del database.execute_sql
    assert len(seen) == 1, seen  # one statement
    return seen[0]


def test_list_sessions_reads_no_json_column(migrated, api):
    api.create_session("copilot", conversation_history=[{"big": "x" * 1000}])
    sql, _ = _listing_sql({})
    for column in ("conversation_history", "context_variables", "plan_data", "meta"):
        assert column not in sql


def test_history_must_be_a_list_and_context_a_dict(migrated, api):
    with pytest.raises(InvalidStateData, match="conversation_history: must be a list"):
        api.create_session("copilot", conversation_history={"role": "user"})
    state = api.create_session("copilot")
    with pytest.raises(InvalidStateData, match="context_variables: must be a dict"):
        api.update_state(state.id, 1, context_variables=["a"])
    assert SessionState.get_by_id(state.id).version == 1


def test_text_compares_case_sensitively_on_every_backend(migrated, api):
    api.create_session("copilot", name="lower")
    api.create_session("Copilot", name="upper")
    assert [r["name"] for r in api.list_sessions(mode="copilot")] == ["lower"]
    Session.create(id="abc")
    Session.create(id="ABC")  # a distinct id, not a duplicate, on MariaDB too
    assert Session.select().where(Session.id.in_(["abc", "ABC"])).count() == 2


def test_timestamps_before_the_year_1000_keep_their_order(migrated, api):
    early = api.create_session("copilot")
    late = api.create_session("copilot")
    api.update_state(early.id, 1, expires_at=dt.datetime(999, 1, 1, tzinfo=UTC))
    api.update_state(late.id, 1, expires_at=dt.datetime(2999, 1, 1, tzinfo=UTC))
    order = SessionState.select().order_by(SessionState.expires_at)
    assert [s.id for s in order] == [early.id, late.id]
    assert SessionState.get_by_id(early.id).expires_at == dt.datetime(999, 1, 1, tzinfo=UTC)


def test_save_writes_json_edited_in_place(migrated, api):
    state = api.create_session("copilot", conversation_history=[{"n": 0}])
    loaded = api.get_state(state.session_id)
    loaded.conversation_history.append({"n": 1})
    loaded.context_variables["k"] = "v"
    loaded.save()
    again = api.get_state(state.session_id)
    assert again.conversation_history == [{"n": 0}, {"n": 1}]
    assert again.context_variables == {"k": "v"} and again.version == 2


def test_final_statuses_stay_final_through_update_state(migrated, api):
    state = api.create_session("copilot")
    version = api.expire(state.session_id)
    with pytest.raises(InvalidTransition) as error:
        api.update_state(state.id, version, status="active")
    assert (error.value.current, error.value.requested) == ("expired", "active")
    assert api.get_state(state.session_id).status == "expired"
    assert api.get_state(state.session_id).version == version
    assert Session.get_by_id(state.session_id).status == "expired"
    with pytest.raises(StaleStateError):  # a stale version is still reported as stale
        api.update_state(state.id, version - 1, status="active")


def test_a_status_change_through_update_state_moves_the_session_too(migrated, api):
    state = api.create_session("copilot")
    assert api.update_state(state.id, 1, status="suspended") == 2
    assert Session.get_by_id(state.session_id).status == "suspended"
    assert api.update_state(state.id, 2, current_step=1) == 3
    assert api.update_state(state.id, 3, status="completed") == 4
    assert Session.get_by_id(state.session_id).status == "completed"


@pytest.mark.parametrize("start, target", [
    ("active", "active"), ("suspended", "suspended"), ("active", "suspended"),
    ("suspended", "active"), ("active", "completed"), ("suspended", "expired"),
    ("completed", "active"), ("expired", "suspended"), ("completed", "completed")])
def test_update_state_and_the_lifecycle_functions_accept_the_same_moves(migrated, start, target, api):
    """One rule: update_state(status=...) refuses exactly what suspend/resume/... refuse."""
    verbs = {"active": ss.resume, "suspended": ss.suspend, "completed": ss.complete,
             "expired": ss.expire}
    outcomes = []
    for write in ("update_state", "verb"):
        state = api.create_session("copilot")
        version = 1 if start == "active" else verbs[start](state.session_id)
        try:
            if write == "update_state":
                api.update_state(state.id, version, status=target)
            else:
                verbs[target](state.session_id)
            outcomes.append("accepted")
        except InvalidTransition:
            outcomes.append("refused")
            assert api.get_state(state.session_id).version == version  # nothing written
        assert Session.get_by_id(state.session_id).status == api.get_state(
            state.session_id).status
    assert outcomes[0] == outcomes[1], outcomes
    assert outcomes[0] == ("refused" if start == target or start in ("completed", "expired")
                           else "accepted")


def test_paging_with_the_cursor_neither_skips_nor_repeats_tied_rows(migrated, api):
    made = {api.create_session("copilot", ttl=0.001).session_id for _ in range(12)}
    import time
    time.sleep(0.01)
    assert api.expire_due() == 12  # one sweep: the same updated_at for all twelve
    seen, before = [], None
    while True:
        page = api.list_sessions(status="expired", limit=5, before=before)
        if not page:
            break
        seen += [row["session_id"] for row in page]
        before = page[-1]["cursor"]
    assert len(seen) == 12 and set(seen) == made


def test_states_updated_at_the_same_instant_list_once(migrated, api):
    state = api.create_session("copilot", name="tied")
    twin = SessionState.create_for_session(state.session_id, "review")
    twin.created_at = twin.updated_at = state.updated_at
    twin.save()
    rows = api.list_sessions()
    assert len(rows) == 1
    assert rows[0]["state_id"] == api.get_state(state.session_id).id


@pytest.mark.parametrize("call, named", [
    (lambda api: api.create_session("copilot", name="\ud800"), "name"),
    (lambda api: api.create_session("copilot", user_id="a\x00b"), "user_id"),
    (lambda api: api.create_session("copilot", ttl=float("nan")), "ttl"),
    (lambda api: api.create_session("copilot", ttl=float("inf")), "ttl"),
    (lambda api: api.create_session("copilot", ttl=1e20), "ttl"),
    (lambda api: api.create_session("copilot", ttl=dt.timedelta(days=999_999_999)), "ttl"),
    (lambda api: api.get_state("a\x00b"), "session_id"),
    (lambda api: api.get_state("\ud800"), "session_id"),
    (lambda api: api.list_sessions(user_id="\ud800"), "user_id"),
    (lambda api: api.update_state("x", 2**70, current_step=1), "expected_version"),
    (lambda api: api.append_messages("x", [1], expected_version=2**70), "expected_version"),
    (lambda api: api.recent_messages("x", 2**63), "limit"),
    (lambda api: api.update_state("x", 1, expires_at=dt.datetime(
        9999, 12, 31, 23, 30, tzinfo=dt.timezone(-dt.timedelta(hours=1)))), "expires_at"),
    (lambda api: Session(name="x" * 300).save(), "name"),
    (lambda api: Session(id="y" * 40).save(), "id"),
    (lambda api: Session(user_id="a\x00b").save(), "user_id"),
])
def test_nasty_inputs_get_invalid_state_data_on_every_backend(migrated, api, call, named):
    before = snapshot(migrated)
    with pytest.raises(InvalidStateData) as error:
        call(api)
    assert str(error.value).startswith(named)
    assert snapshot(migrated) == before


def test_expire_due_never_changes_which_state_is_current(migrated, api):
    """An older state that is due expires; the newer, active one stays the current state."""
    older = api.create_session("copilot", ttl=0.001)
    newer = SessionState.create_for_session(older.session_id, "review")
    newer.save()
    api.update_state(newer.id, 1, current_step=1)  # the newer state is the current one
    assert api.get_state(older.session_id).id == newer.id
    import time
    time.sleep(0.01)
    assert api.expire_due() == 1
    current = api.get_state(older.session_id)
    assert (current.id, current.status) == (newer.id, "active")
    assert Session.get_by_id(older.session_id).status == "active"  # follows the current state
    assert SessionState.get_by_id(older.id).status == "expired"
    assert SessionState.get_by_id(older.id).version == 2
    assert api.suspend(older.session_id) == 3 and api.resume(older.session_id) == 4
    rows = api.list_sessions()
    assert [(row["state_id"], row["status"]) for row in rows] == [(newer.id, "active")]


def test_expire_due_of_a_current_state_moves_its_session(migrated, api):
    state = api.create_session("copilot", ttl=0.001)
    import time
    time.sleep(0.01)
    assert api.expire_due() == 1
    assert api.get_state(state.session_id).status == "expired"
    assert Session.get_by_id(state.session_id).status == "expired"


def test_pop_message_removes_and_returns_the_last_item(migrated, api):
    items = [{"role": "user", "content": [{"type": "text", "text": "héllo"}]}, "plain",
             7, None, [1, {"a": True}]]
    state = api.create_session("copilot", conversation_history=items)
    popped = [api.pop_message(state.id) for _ in range(len(items))]
    assert popped == items[::-1]
    assert api.pop_message(state.id) is None  # empty: nothing to pop, nothing written
    current = api.get_state(state.session_id)
    assert current.conversation_history == [] and current.version == 1 + len(items)
    with pytest.raises(SessionNotFound):
        api.pop_message("no-such-state")


def test_clear_messages_empties_the_history_and_keeps_the_rest(migrated, api):
    state = api.create_session("copilot", name="kept", meta={"k": 1},
                               conversation_history=[{"n": 1}, {"n": 2}],
                               context_variables={"c": 3})
    assert api.clear_messages(state.id) == 2
    current = api.get_state(state.session_id)
    assert (current.conversation_history, current.context_variables) == ([], {"c": 3})
    assert Session.get_by_id(state.session_id).meta == {"k": 1}
    assert api.append_messages(state.id, [{"n": 3}]) == 3
    with pytest.raises(SessionNotFound):
        api.clear_messages("no-such-state")


def test_create_session_with_a_chosen_id(migrated, api):
    state = api.create_session("copilot", session_id="my-own-id")
    assert state.session_id == "my-own-id" and api.get_state("my-own-id").id == state.id
    with pytest.raises(ss.AlreadyExists):
        api.create_session("copilot", session_id="my-own-id")
    assert SessionState.select().count() == 1
    with pytest.raises(InvalidStateData, match="session_id"):
        api.create_session("copilot", session_id="x" * 37)
