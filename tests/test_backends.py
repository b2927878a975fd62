"""Backend plumbing: retries on lock contention, the migration lock."""

import peewee as pw
import pytest

import sessionstate
from sessionstate import DatabaseBusy, backends


def test_with_retries_retries_transient_errors_then_succeeds(monkeypatch):
    monkeypatch.setattr(backends.time, "sleep", lambda seconds: None)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise pw.OperationalError("database is locked")
        return "done"

    assert backends.with_retries(flaky) == "done"
    assert len(calls) == 3


def test_with_retries_gives_up_with_database_busy(monkeypatch):
    monkeypatch.setattr(backends.time, "sleep", lambda seconds: None)

    def deadlocked():
        raise pw.OperationalError("(1213, 'Deadlock found when trying to get lock')")

    with pytest.raises(DatabaseBusy, match="stayed busy after 8 attempts"):
        backends.with_retries(deadlocked)


def test_with_retries_lets_other_errors_through():
    def broken():
        raise pw.OperationalError("no such column: bogus")

    with pytest.raises(pw.OperationalError, match="bogus"):
        backends.with_retries(broken)


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
    if backend == "mysql":
        raw.connect_params.pop("init_command", None)  # the server's default zone, not ours
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
