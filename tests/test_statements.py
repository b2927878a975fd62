"""The hot paths, seen from the database: how many statements each runs, and what they say.

Checked through the public API and the SQL the database receives (never private names):
one SELECT for get_state, one UPDATE for update_state, one statement per listing, the
append in the database, and statements compiled once per database.
"""

import datetime as dt
import json

import pytest

import sessionstate as ss
from sessionstate import dialects
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


def comparable(params):
    """Parameters as comparable values (psycopg's Jsonb wrappers compare by their object)."""
    return [getattr(value, "obj", value) for value in params]


def words(sql):
    return sql.upper().replace('"', "").replace("`", "")


def test_get_state_is_one_select_and_gives_a_stored_instance(migrated, executed):
    created = ss.create_session("copilot", conversation_history=[{"role": "user"}])
    executed.clear()
    got = ss.get_state(created.session_id)
    [(sql, params)] = executed
    assert words(sql).startswith("SELECT") and params[0] == created.session_id
    assert got.id == created.id and got.conversation_history == [{"role": "user"}]
    got.current_step = 7
    got.save()  # a loaded row: the version-checked update, not an INSERT
    assert ss.get_state(created.session_id).version == 2
    created.current_step = 8
    with pytest.raises(ss.StaleStateError):
        created.save()  # its version 1 is gone


def test_update_state_is_one_version_checked_update(migrated, executed):
    created = ss.create_session("copilot")
    now = dt.datetime(2031, 2, 3, 4, 5, 6, 789, tzinfo=UTC)
    changes = {"context_variables": {"a": [1, "é"]}, "current_step": 4,
               "expires_at": now, "plan_data": None}
    executed.clear()
    assert ss.update_state(created.id, 1, **changes) == 2
    [(sql, params)] = executed
    text = words(sql)
    assert text.startswith("UPDATE SESSION_STATES SET")
    assert "VERSION = (SESSION_STATES.VERSION + " in text  # the bump, in the database
    where = text.split("WHERE")[1]
    assert "SESSION_STATES.ID = " in where and "SESSION_STATES.VERSION = " in where
    assert comparable(params)[-2:] == [created.id, 1]  # WHERE id = ? AND version = ?
    assert {"a": [1, "é"]} in [json.loads(value) if isinstance(value, str) and value[:1] == "{"
                               else value for value in comparable(params)]
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
def test_list_sessions_is_one_select_with_the_filters_as_parameters(migrated, executed,
                                                                    filters):
    ss.create_session("copilot", user_id="u")
    executed.clear()
    rows = ss.list_sessions(limit=7, **filters)
    assert len(rows) == 1 and rows[0]["user_id"] == "u"
    [(sql, params)] = executed
    assert words(sql).startswith("SELECT") and 7 in params
    for name in ("status", "mode", "user_id"):
        if name in filters:
            assert filters[name] in params
    other = ss.list_sessions(limit=7, **dict(filters, mode="review"))
    assert other == []
    assert executed[-1][0] == executed[0][0] or "mode" not in filters  # same shape, same SQL


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
    assert compiled(first, "probe", build).rows({"id": "none"}) == []
    second = ss.connect("sqlite:///%s" % (tmp_path / "two.db"))
    ss.migrate(second)
    compiled(second, "probe", build)
    assert len(builds) == 2
    first.close()
    second.close()


def test_save_of_new_rows_inserts_each_in_one_statement(migrated, executed):
    session = ss.Session(name="n", user_id="u", meta={"k": ["é", 1]}, status="active")
    state = SessionState.create_for_session(session.id, "copilot",
                                            conversation_history=[{"role": "user"}])
    executed.clear()
    session.save()
    state.save()
    inserts = [words(sql) for sql, _ in executed if words(sql).startswith("INSERT")]
    assert [sql.split()[2] for sql in inserts] == ["SESSIONS", "SESSION_STATES"]
    got = ss.get_state(session.id)
    assert got.id == state.id and got.conversation_history == [{"role": "user"}]
    assert ss.Session.get_by_id(session.id).meta == {"k": ["é", 1]}
    state.current_step = 3
    executed.clear()
    state.save()  # a stored row: the version-checked update, not an insert
    assert [words(sql).split()[0] for sql, _ in executed] == ["UPDATE"]
    assert ss.get_state(session.id).current_step == 3


@pytest.mark.parametrize("count", [1, 3, 70])
@pytest.mark.parametrize("expected_version", [None, 1])
def test_append_is_one_update_inside_the_database(migrated, executed, count, expected_version):
    created = ss.create_session("copilot", conversation_history=[{"n": -1}])
    messages = [{"n": i, "text": "é%d" % i} for i in range(count)]
    executed.clear()
    assert ss.append_messages(created.id, messages, expected_version=expected_version) == 2
    kinds = [words(sql).split()[0] for sql, _ in executed]
    assert kinds.count("UPDATE") == 1
    update = [words(sql) for sql, _ in executed if words(sql).startswith("UPDATE")][0]
    assert "CONVERSATION_HISTORY" in update.split("SET")[1]
    if expected_version is None and dialects.of(migrated).update_returning:
        assert kinds == ["UPDATE"] and "RETURNING" in update  # the version in one statement
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
