"""Running statements: retries on contention and lost connections, and error translation.

Every database call of the package runs through ``read()`` or ``write()``. Lock contention
and deadlock victims are retried. A connection found dead is discarded and a fresh one
opened: a read is retried once; a write is retried only when it cannot have been applied
(the failure came before its COMMIT was sent), else the caller gets ConnectionLost. Any
other driver or peewee exception becomes a SessionStateError with the cause chained.
"""

import random
import time

import peewee as pw

from . import dialects
from .errors import (ConnectionLost, DatabaseBusy, DatabaseError, DatabaseUnavailable,
                     SchemaNotReady, SessionStateError)

TRANSIENT_ATTEMPTS = 8  # lock timeouts, deadlock victims: retried this often, then DatabaseBusy
DRIVER_MODULES = ("sqlite3", "psycopg", "pymysql", "aiosqlite", "asyncpg", "aiomysql")


def read(database, operation):
    """Run `operation()` (reads only); retried on contention and once on a lost connection."""
    return _run(database, operation, write=False)


def write(database, operation, single=False):
    """Run `operation()` in one transaction under the write lock; see the module docstring.

    single: `operation` runs one statement, which commits by itself (autocommit); a lost
    connection during it leaves the outcome unknown.
    """
    return _run(database, operation, write=True, single=single)


def _run(database, operation, write, single=False):
    dialect = dialects.of(database)
    retries = _Retries(database, dialect)
    while True:
        sent = [False]  # a COMMIT (or a single autocommit statement) has been sent
        try:
            return _attempt(database, dialect, operation, write, single, sent)
        except SessionStateError:
            raise
        except Exception as exc:  # noqa: BLE001 - every driver error is translated below
            if not is_database_error(exc):
                raise
            retries.wait_or_raise(exc, in_doubt=write and sent[0])


def _attempt(database, dialect, operation, write, single, sent):
    if single:
        _fresh_connection(database, dialect)
        sent[0] = True
        return operation()
    if not write:
        return operation()
    with dialect.write_lock(database):
        result = operation()
        sent[0] = True
    return result


class _Retries:
    """What one call may still retry: contention a few times, a lost connection until the
    connect timeout; the error to raise when it may not."""

    def __init__(self, database, dialect):
        self.database, self.dialect = database, dialect
        self.busy = self.lost = 0
        self.deadline = time.monotonic() + dialects.CONNECT_TIMEOUT_SECONDS

    def wait_or_raise(self, exc, in_doubt):
        dialect = self.dialect
        if dialect.is_disconnect(exc):
            discard_connection(self.database)
        if may_run_again(dialect, exc, in_doubt) == "contention":
            if self.busy >= TRANSIENT_ATTEMPTS - 1:
                raise translate(exc, dialect) from exc
            self.busy += 1
            dialect.sleep(random.uniform(0.005, 0.02) * self.busy)
            return
        if self.lost >= dialect.reconnect_attempts or time.monotonic() > self.deadline:
            raise DatabaseUnavailable("cannot reach the database: %s" % _one_line(exc)) from exc
        dialect.sleep(RECONNECT_PAUSES[min(self.lost, 1)])
        self.lost += 1


RECONNECT_PAUSES = (0.0, 0.25)  # a dropped connection: at once; a server still coming back


def _fresh_connection(database, dialect):
    """Open this thread's connection, or replace one that died while idle, before a statement
    whose outcome must be known: failing here, it cannot have been applied."""
    if dialect.idle_connection_lost(database):
        discard_connection(database)
    database.connection()


IN_DOUBT = ("the connection to the database was lost while the write was being committed: "
            "it may or may not have been applied. Re-read the state to check; a "
            "version-checked write (update_state with the version you read) then shows "
            "whether it landed")


def may_run_again(dialect, exc, in_doubt):
    """How a call that met the database error `exc` goes on, the one rule of both APIs:
    "contention" or "disconnect" when it may run again (nothing of it was applied); else
    this raises ConnectionLost (in_doubt: its COMMIT was sent and the connection lost, so
    its outcome is unknown) or the error's translation."""
    if dialect.is_transient(exc):
        return "contention"
    if not dialect.is_disconnect(exc):
        raise translate(exc, dialect) from exc
    if in_doubt and not dialect.never_sent(exc):
        raise ConnectionLost(IN_DOUBT) from exc
    return "disconnect"


def is_database_error(exc):
    """True for peewee's exceptions, the drivers' own, and a socket's failures."""
    return isinstance(exc, (pw.PeeweeException, ConnectionError, TimeoutError)) or (
        type(exc).__module__.split(".")[0] in DRIVER_MODULES)


def translate(exc, dialect):
    """The SessionStateError for a driver or peewee exception (the caller chains it)."""
    if dialect.is_transient(exc):
        return DatabaseBusy("the database stayed busy after %d attempts: %s"
                            % (TRANSIENT_ATTEMPTS, _one_line(exc)))
    if dialect.is_missing_table(exc):
        return SchemaNotReady(None, _one_line(exc))
    if dialect.is_disconnect(exc):
        return DatabaseUnavailable("the database connection was lost: %s" % _one_line(exc))
    return DatabaseError("database error: %s" % (_one_line(exc) or type(exc).__name__))


def discard_connection(database):
    """Drop this thread's connection (a pool must not hand it out again); errors ignored."""
    close = getattr(database, "manual_close", None) or database.close  # pooled: not reused
    try:
        close()
    except Exception:  # noqa: BLE001 - the connection is dead; closing it may fail too
        pass


def _one_line(exc):
    return " ".join(str(exc).split())
