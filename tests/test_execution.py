"""Running statements: retries on lock contention, translated errors, the migration lock."""

import peewee as pw
import pytest

import sessionstate
from conftest import SERVER_TIME_ZONE
from sessionstate import DatabaseBusy, DatabaseError, execution


def test_transient_errors_are_retried_then_succeed(monkeypatch, db):
    monkeypatch.setattr(execution.time, "sleep", lambda seconds: None)
    for run in (execution.read, execution.write):
        calls = []

        def flaky():
            calls.append(1)
            if len(calls) < 3:  # contention as SQLite, PostgreSQL and MariaDB word it
                raise pw.OperationalError("database is locked; (1213, 'deadlock detected')")
            return "done"

        assert run(db, flaky) == "done"
        assert len(calls) == 3


def test_contention_that_never_ends_gives_database_busy_with_the_cause(monkeypatch, db):
    monkeypatch.setattr(execution.time, "sleep", lambda seconds: None)
    calls = []

    def deadlocked():
        calls.append(1)
        raise pw.OperationalError("database is locked; (1213, 'Deadlock found') deadlock")

    with pytest.raises(DatabaseBusy, match="stayed busy after 8 attempts") as error:
        execution.write(db, deadlocked)
    assert isinstance(error.value.__cause__, pw.OperationalError)
    assert len(calls) == execution.TRANSIENT_ATTEMPTS


def test_other_database_errors_are_wrapped_with_the_cause_kept(db):
    def broken():
        raise pw.OperationalError("no such column: bogus")

    with pytest.raises(DatabaseError, match="bogus") as error:
        execution.read(db, broken)
    assert isinstance(error.value.__cause__, pw.OperationalError)


def test_errors_that_are_not_the_databases_go_through(db):
    def buggy():
        raise KeyError("mine")

    with pytest.raises(KeyError):
        execution.read(db, buggy)


def test_migrate_keeps_the_callers_connection_open(db):
    db.connect(reuse_if_open=True)
    sessionstate.migrate(db)
    assert not db.is_closed()
    assert sessionstate.migration_status(db)[1] == []


def test_rows_written_by_other_clients_in_another_zone_read_back_in_utc(migrated, backend):
    """A client whose session runs in +05:30 (the server default under test) inserts a row
    with the database defaults: the library reads the same instant, in UTC."""
    import datetime as dt

    from sessionstate import Session, SessionState

    if backend == "sqlite":
        pytest.skip("SQLite has no session time zone")
    raw = type(migrated)(migrated.database, **migrated.connect_params)
    if backend == "mysql":  # a client of its own zone, not the library's +00:00
        raw.connect_params["init_command"] = "SET time_zone = '%s'" % SERVER_TIME_ZONE["mysql"]
    with raw.connection_context():
        zone_query = ("SELECT @@session.time_zone" if backend == "mysql" else "SHOW timezone")
        zone = raw.execute_sql(zone_query).fetchone()[0]
        assert zone in ("+05:30", "Asia/Kolkata")
        raw.execute_sql("INSERT INTO sessions (id) VALUES ('raw')")
        raw.execute_sql("INSERT INTO session_states (id, session_id, mode) "
                        "VALUES ('raw-state', 'raw', 'copilot')")
    now = dt.datetime.now(dt.timezone.utc)
    for value in (Session.get_by_id("raw").created_at,
                  SessionState.get_by_id("raw-state").updated_at):
        assert value.tzinfo == dt.timezone.utc
        assert abs(value - now) < dt.timedelta(seconds=30)
