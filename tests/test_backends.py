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
