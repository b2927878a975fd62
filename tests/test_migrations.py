"""The migration runner: migrate, rollback, status, and the refusal of an unmigrated database.

Later issues add migrations after 002; the tests name 001 and 002 where the specification
does and otherwise follow whatever the code ships (sessionstate.migrate.available()).
"""

import datetime as dt
import ast
import uuid

import pytest

import sessionstate
from sessionstate import (
    SchemaNotReady,
    Session,
    SessionState,
    SessionStateError,
    migrate,
    migration_status,
    rollback,
    update_state,
)
from sessionstate.migrate import applied, available, migrations_dir

FIRST = "001_create_sessions"
SECOND = "002_add_session_states"
SPEC_INDEXES = (
    "idx_session_states_session_id",
    "idx_session_states_status",
    "idx_session_states_session_status",
    "idx_session_states_mode",
    "idx_session_states_updated",
)


def tables(db):
    return set(db.get_tables())


def index_names(db, backend):
    """Every index name in the database, whatever its table."""
    if backend == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'index'"
    elif backend == "postgresql":
        sql = "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
    else:
        sql = ("SELECT DISTINCT index_name FROM information_schema.statistics "
               "WHERE table_schema = DATABASE()")
    return {row[0] for row in db.execute_sql(sql).fetchall()}


def steps_back_to(db, name):
    """How many rollback steps undo everything applied after `name` (and `name` itself)."""
    done = applied(db)
    return len(done) - done.index(name)


def test_the_code_ships_001_and_002_first():
    names = available()
    assert names[:2] == [FIRST, SECOND]
    assert names == sorted(set(names))


def test_migrate_applies_every_migration_once(db):
    names = available()
    assert migrate(db) == names
    assert migrate(db) == []
    assert applied(db) == names
    assert {FIRST, SECOND} <= set(names)


def test_migration_status_before_and_after(db):
    assert migration_status(db) == ([], available())
    migrate(db)
    assert migration_status(db) == (available(), [])


def test_status_does_not_create_anything(db):
    migration_status(db)
    assert tables(db) == set()


def test_rollback_of_002_removes_only_session_states_and_its_indexes(db, backend):
    migrate(db)
    Session.create(id="kept", name="survives the rollback")
    undone = rollback(db, steps=steps_back_to(db, SECOND))
    assert undone[-1] == SECOND and FIRST not in undone
    assert tables(db) == {"sessions", "migratehistory"}
    names = index_names(db, backend)
    assert not names & set(SPEC_INDEXES)
    assert "idx_sessions_user_id" in names
    assert not any(name.startswith("idx_session_states") for name in names)
    assert migration_status(db) == ([FIRST], available()[1:])
    # (Read with SQL: the models refuse a database that is not at the head.)
    assert db.execute_sql("SELECT name FROM sessions WHERE id = 'kept'").fetchone() == (
        "survives the rollback",)


def test_rollback_one_step_undoes_only_the_newest(db):
    migrate(db)
    names = available()
    assert rollback(db, 1) == [names[-1]]
    assert applied(db) == names[:-1]


def test_rolling_back_everything_leaves_only_the_history_table(db, backend):
    migrate(db)
    names = available()
    assert rollback(db, steps=len(names)) == names[::-1]
    assert tables(db) == {"migratehistory"}
    assert not any(name.startswith("idx_") for name in index_names(db, backend))
    assert migration_status(db) == ([], names)
    assert rollback(db) == []  # nothing left to undo: nothing happens


def test_rollback_more_steps_than_applied_stops_at_the_bottom(db):
    migrate(db)
    assert rollback(db, steps=len(available()) + 5) == available()[::-1]
    assert tables(db) == {"migratehistory"}


def test_migrate_rollback_migrate_round_trip(db, backend):
    names = available()
    assert migrate(db) == names
    assert rollback(db, steps=len(names)) == names[::-1]
    assert migrate(db) == names
    assert set(SPEC_INDEXES) <= index_names(db, backend)
    session = Session.create(name="after the round trip")
    state = SessionState.create_for_session(session.id, "copilot")
    state.save()
    assert update_state(state.id, 1, current_step=1) == 2
    assert SessionState.get_by_id(state.id).current_step == 1


def test_round_trip_of_002_alone_keeps_sessions(db):
    migrate(db)
    session = Session.create(name="kept")
    steps = steps_back_to(db, SECOND)
    rollback(db, steps=steps)
    assert migrate(db) == available()[1:]
    state = SessionState.create_for_session(session.id, "copilot")
    state.save()
    assert [s.id for s in session.session_states] == [state.id]


def test_rollback_refuses_a_step_count_that_is_not_a_positive_integer(db):
    migrate(db)
    for steps in (0, -1, True, 1.0, "1", None):
        with pytest.raises(ValueError, match="steps"):
            rollback(db, steps=steps)
        assert applied(db) == available(), steps


def test_cli_refuses_rollback_steps_zero(url, capsys):
    from sessionstate.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--database", url, "rollback", "--steps", "0"])
    assert exit_info.value.code == 2
    assert "at least 1" in capsys.readouterr().err


def test_migrate_never_creates_a_migrations_folder_in_the_working_directory(
        db, tmp_path, monkeypatch):
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    assert migrate(db) == available()
    migration_status(db)
    rollback(db)
    assert list(work.iterdir()) == []


def test_migration_scripts_never_import_the_models():
    """Each script keeps a frozen copy of its schema; importing sessionstate would not be."""
    for path in sorted(migrations_dir().glob("[0-9][0-9][0-9]_*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""] if node.level == 0 else ["<relative>"]
            else:
                continue
            for module in modules:
                assert not module.startswith("sessionstate") and module != "<relative>", (
                    "%s imports %s" % (path.name, module))


# --- using a database that is not migrated -------------------------------------------------


def assert_names_pending(error, pending):
    message = str(error)
    for name in pending:
        assert name in message
    assert "make migrate" in message
    assert error.pending == pending
    assert isinstance(error, SessionStateError)


def test_update_state_on_an_unmigrated_database_says_what_to_do(db):
    with pytest.raises(SchemaNotReady) as error:
        update_state(str(uuid.uuid4()), 1, status="suspended")
    assert_names_pending(error.value, available())
    assert tables(db) == set()  # checking created nothing, not even the history table


def test_session_save_on_an_unmigrated_database_says_what_to_do(db):
    # The models do not check the schema (they are declarations); the failed INSERT is
    # translated, and says what to do.
    with pytest.raises(SchemaNotReady, match="make migrate") as error:
        Session(name="too early").save()
    assert isinstance(error.value.__cause__, Exception)
    assert tables(db) == set()


def test_an_operation_on_a_partly_migrated_database_names_only_what_is_pending(db):
    migrate(db)
    rollback(db, steps=steps_back_to(db, SECOND))
    pending = available()[1:]
    with pytest.raises(SchemaNotReady) as error:
        sessionstate.create_session("copilot")
    assert_names_pending(error.value, pending)
    assert FIRST not in str(error.value)
    with pytest.raises(SchemaNotReady):
        update_state(str(uuid.uuid4()), 1, status="suspended")


def test_the_check_notices_a_rollback_after_it_once_passed(db):
    migrate(db)
    sessionstate.create_session("copilot")  # check passed, remembered
    rollback(db)
    with pytest.raises(SchemaNotReady) as error:
        sessionstate.create_session("copilot")
    assert error.value.pending == [available()[-1]]
    migrate(db)
    sessionstate.create_session("copilot")


def test_package_exports_the_runner():
    assert sessionstate.migrate is migrate
    assert sessionstate.rollback is rollback
    assert sessionstate.migration_status is migration_status


def test_every_operation_on_an_unmigrated_database_says_what_is_pending(db):
    some_id = str(uuid.uuid4())
    now = dt.datetime.now(dt.timezone.utc)
    for call in (lambda: sessionstate.get_state(some_id), lambda: sessionstate.list_sessions(),
                 lambda: sessionstate.recent_messages(some_id, 1),
                 lambda: sessionstate.append_messages(some_id, [{"n": 1}]),
                 lambda: sessionstate.modify_state(some_id, lambda state: {}),
                 lambda: sessionstate.suspend(some_id), lambda: sessionstate.expire_due(),
                 lambda: sessionstate.purge(now), lambda: sessionstate.delete_session(some_id),
                 lambda: sessionstate.export_session(some_id),
                 lambda: sessionstate.create_session("copilot")):
        with pytest.raises(SchemaNotReady, match="001_create_sessions.*make migrate"):
            call()
    assert tables(db) == set()
