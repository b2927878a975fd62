"""Compiled statements: the hot paths run the very SQL peewee would, compiled once per database.

The SQL text each cached statement runs must equal what peewee compiles for the same query
with the call's values, and the parameters must be those values, converted as peewee would.
"""

import datetime as dt

import pytest

import sessionstate as ss
from sessionstate import lifecycle, state as state_module
from sessionstate.models import SessionState
from sessionstate.statements import compiled, param

UTC = dt.timezone.utc


@pytest.fixture
def executed(migrated, monkeypatch):
    """The (sql, params) of every statement run while the test runs."""
    statements = []
    original = migrated.execute_sql

    def recording(sql, params=None, *args, **kwargs):
        statements.append((sql, list(params or ())))
        return original(sql, params, *args, **kwargs)

    monkeypatch.setattr(migrated, "execute_sql", recording)
    return statements


def peewee_sql(query):
    sql, params = query.sql()
    return sql, list(params)


def comparable(params):
    """Parameters as comparable values (psycopg's Jsonb wrappers compare by their object)."""
    return [getattr(value, "obj", value) for value in params]


def test_get_state_runs_peewee_sql(migrated, executed):
    created = ss.create_session("copilot", conversation_history=[{"role": "user"}])
    executed.clear()
    got = ss.get_state(created.session_id)
    assert got.id == created.id and got.conversation_history == [{"role": "user"}]
    assert got._stored  # a loaded row: save() updates it (version-checked)
    expected = peewee_sql(lifecycle._latest_state_query(created.session_id))
    assert executed == [expected]


def test_update_state_runs_peewee_sql(migrated, executed, monkeypatch):
    created = ss.create_session("copilot")
    now = dt.datetime(2031, 2, 3, 4, 5, 6, 789, tzinfo=UTC)
    monkeypatch.setattr(state_module, "utcnow", lambda: now)
    # (A status change takes another path: guarded by the lifecycle, moving the session too.)
    changes = {"context_variables": {"a": [1, "é"]}, "current_step": 4,
               "expires_at": now, "plan_data": None}
    executed.clear()
    assert ss.update_state(created.id, 1, **changes) == 2
    values = {SessionState._meta.fields[name]: value for name, value in changes.items()}
    values[SessionState.updated_at] = now
    values[SessionState.version] = SessionState.version + 1
    expected_sql, expected_params = peewee_sql(SessionState.update(values).where(
        (SessionState.id == created.id) & (SessionState.version == 1)))
    [(sql, params)] = executed
    assert sql == expected_sql
    assert comparable(params) == comparable(expected_params)
    got = ss.get_state(created.session_id)
    assert (got.context_variables, got.current_step, got.status, got.expires_at, got.version) \
        == ({"a": [1, "é"]}, 4, "active", now, 2)


def test_stale_and_missing_are_still_told_apart(migrated):
    created = ss.create_session("copilot")
    ss.update_state(created.id, 1, current_step=1)
    with pytest.raises(ss.StaleStateError):
        ss.update_state(created.id, 1, current_step=2)
    with pytest.raises(ss.SessionNotFound):
        ss.update_state("no-such-state", 1, current_step=2)


@pytest.mark.parametrize("filters", [
    {}, {"status": "active"}, {"mode": "copilot", "user_id": "u"},
    {"status": "active", "mode": "copilot", "user_id": "u",
     "before": dt.datetime(2099, 1, 1, tzinfo=UTC)},
    {"status": "active", "before": (dt.datetime(2099, 1, 1, tzinfo=UTC), "zzz")},
])
def test_list_sessions_runs_peewee_sql(migrated, executed, filters):
    ss.create_session("copilot", user_id="u")
    executed.clear()
    rows = ss.list_sessions(limit=7, **filters)
    assert len(rows) == 1 and rows[0]["user_id"] == "u"
    before, before_id = lifecycle._listing_cursor(filters.get("before"))
    query = lifecycle._listing_query(filters.get("status"), filters.get("mode"),
                                     filters.get("user_id"), before, before_id, 7)
    assert executed == [peewee_sql(query)]


def test_statements_are_compiled_once_per_database(tmp_path):
    first = ss.connect("sqlite:///%s" % (tmp_path / "one.db"))
    ss.migrate(first)
    builds = []

    def build():
        builds.append(1)
        return SessionState.select().where(SessionState.id == param("id"))

    for _ in range(3):
        compiled(first, "probe", build)
    assert len(builds) == 1
    second = ss.connect("sqlite:///%s" % (tmp_path / "two.db"))
    ss.migrate(second)
    compiled(second, "probe", build)
    assert len(builds) == 2
    first.close()
    second.close()


def test_save_of_a_new_row_runs_peewee_insert(migrated, executed):
    session = ss.Session(name="n", user_id="u", meta={"k": ["é", 1]}, status="active")
    state = SessionState.create_for_session(session.id, "copilot",
                                            conversation_history=[{"role": "user"}])
    expected = [peewee_sql(type(row).insert(**row.__data__)) for row in (session, state)]
    executed.clear()
    session.save()
    state.save()
    inserts = [(sql, comparable(params)) for sql, params in executed if sql.startswith("INSERT")]
    assert inserts == [(sql, comparable(params)) for sql, params in expected]
    assert state._stored and not state._dirty
    got = ss.get_state(session.id)
    assert got.id == state.id and got.conversation_history == [{"role": "user"}]
    assert ss.Session.get_by_id(session.id).meta == {"k": ["é", 1]}
    state.current_step = 3
    state.save()  # a stored row: the version-checked update, not an insert
    assert ss.get_state(session.id).current_step == 3


@pytest.mark.parametrize("count", [1, 3, 70])
@pytest.mark.parametrize("expected_version", [None, 1])
def test_append_runs_peewee_sql(migrated, executed, monkeypatch, count, expected_version):
    created = ss.create_session("copilot", conversation_history=[{"n": -1}])
    now = dt.datetime(2031, 2, 3, 4, 5, 6, 789, tzinfo=UTC)
    monkeypatch.setattr(lifecycle, "utcnow", lambda: now)
    messages = [{"n": i, "text": "é%d" % i} for i in range(count)]
    expected = peewee_sql(lifecycle._append_query(
        migrated, count, expected_version is not None, messages=messages, state_id=created.id,
        expected_version=expected_version))
    executed.clear()
    assert ss.append_messages(created.id, messages, expected_version=expected_version) == 2
    updates = [(sql, comparable(params)) for sql, params in executed if sql.startswith("UPDATE")]
    assert updates == [(expected[0], comparable(expected[1]))]
    assert ss.get_state(created.session_id).conversation_history == [{"n": -1}] + messages


def test_later_executions_convert_their_rows_as_the_first(migrated):
    when = dt.datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    first = ss.create_session("copilot", conversation_history=[{"a": 1}], ttl=60)
    second = ss.create_session("review", conversation_history=[{"b": "é"}],
                               context_variables={"k": [1.5]})
    ss.update_state(second.id, 1, expires_at=when, current_step=2)
    for _ in range(2):
        one, two = ss.get_state(first.session_id), ss.get_state(second.session_id)
        assert (one.mode, one.conversation_history, one.version) == ("copilot", [{"a": 1}], 1)
        assert (two.mode, two.conversation_history, two.context_variables, two.expires_at,
                two.current_step, two.version) == ("review", [{"b": "é"}], {"k": [1.5]}, when,
                                                   2, 2)
        assert isinstance(one.updated_at, dt.datetime) and one.updated_at.tzinfo is not None
        rows = ss.list_sessions()
        assert [row["mode"] for row in rows] == ["review", "copilot"]
        assert all(row["updated_at"].tzinfo is not None for row in rows)
