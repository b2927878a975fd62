"""Everything that differs between SQLite, PostgreSQL and MariaDB/MySQL, in one place.

The rest of the package speaks peewee; this module answers the few questions whose answer
depends on the server: which driver a URL needs, how a fresh connection is set up, how a
timestamp is written, how deep a JSON value may nest, and how to serialise migrations.
"""

import contextlib
import datetime as dt
import importlib.util
import time

import peewee as pw

UTC = dt.timezone.utc

# How deep a JSON value may nest. MariaDB/MySQL refuse documents deeper than 32 levels
# (ER_JSON_DOCUMENT_TOO_DEEP); SQLite's json() stops at 1000 in older releases. We refuse
# before writing so every backend answers with InvalidStateData, never a driver error.
JSON_MAX_DEPTH = {"sqlite": 1000, "postgresql": 1000, "mysql": 32}

# The Python modules each URL family needs, and the extra that installs them.
DRIVERS = {
    "postgresql": (("psycopg", "psycopg2"), "sessionstate[postgres]"),
    "mysql": (("pymysql", "MySQLdb"), "sessionstate[mysql]"),
}

SQLITE_BUSY_TIMEOUT_SECONDS = 10


def kind(database):
    """'sqlite', 'postgresql' or 'mysql': the family a peewee database belongs to."""
    if isinstance(database, pw.SqliteDatabase):
        return "sqlite"
    if isinstance(database, pw.PostgresqlDatabase):
        return "postgresql"
    if isinstance(database, pw.MySQLDatabase):
        return "mysql"
    raise TypeError("unsupported database: %r" % (database,))


def kind_of_scheme(scheme):
    """The family a URL scheme such as 'postgresql+pool' belongs to, or None."""
    base = scheme.split("+", 1)[0]
    if base.startswith("sqlite"):
        return "sqlite"
    if base.startswith("postgres") or base.startswith("psycopg"):
        return "postgresql"
    if base.startswith("mysql") or base.startswith("mariadb"):
        return "mysql"
    return None


def missing_driver(family):
    """The extra to install when no driver for `family` can be imported, else None."""
    if family not in DRIVERS:
        return None
    modules, extra = DRIVERS[family]
    if any(importlib.util.find_spec(name) for name in modules):
        return None
    return extra


def connect_params(family):
    """Keyword arguments for the peewee database class of `family`."""
    if family == "sqlite":
        return {
            "timeout": SQLITE_BUSY_TIMEOUT_SECONDS,
            "pragmas": {
                "foreign_keys": 1,  # ON DELETE CASCADE depends on it, per connection.
                "busy_timeout": SQLITE_BUSY_TIMEOUT_SECONDS * 1000,
                "synchronous": "normal",  # safe with WAL: a killed process loses nothing.
            },
        }
    if family == "mysql":
        # Our DATETIME(6) columns hold UTC; NOW() and friends must agree, whatever the
        # server's own zone is.
        return {"init_command": "SET time_zone = '+00:00'"}
    return {}


def prepare(database):
    """Finish setting up a database object that peewee's URL parser has built."""
    family = kind(database)
    if family == "sqlite":
        _enable_wal(database)
    elif family == "mysql":
        _detect_mariadb(database)
    return database


def _detect_mariadb(database):
    """Tell peewee whether the server is MariaDB, whatever the URL's scheme says.

    peewee 4.5's JSONField marks JSON values with CAST(? AS JSON) unless the database object
    knows it is MariaDB, and MariaDB rejects that syntax.
    """
    with database.connection_context():
        version = database.execute_sql("SELECT VERSION()").fetchone()[0]
    database.mariadb = "mariadb" in version.lower()


def _enable_wal(database):
    """Switch a SQLite file to WAL once; retry while another process does the same.

    Setting journal_mode needs an exclusive lock for a moment. On a brand-new file, several
    processes doing it at once get "database is locked" without going through the busy
    handler, so we retry for the length of the busy timeout.
    """
    if database.database in ("", ":memory:") or database.database.startswith("file::memory:"):
        return
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_SECONDS
    while True:
        try:
            with database.connection_context():
                database.execute_sql("PRAGMA journal_mode=wal")
            return
        except pw.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def json_max_depth(database):
    """How many levels of nesting a JSON value may have on this database."""
    return JSON_MAX_DEPTH[kind(database)]


def write_timestamp(database, value):
    """The value to send for an aware UTC datetime on this database.

    SQLite has no timestamp type: we store ISO text with a fixed width (microseconds and
    "+00:00" always present) so that text order is time order and indexes on it work.
    """
    family = kind(database)
    if family == "sqlite":
        return value.strftime("%Y-%m-%d %H:%M:%S.%f+00:00")
    if family == "mysql":
        return value.replace(tzinfo=None)  # DATETIME(6) holds UTC, without a zone
    return value


def read_timestamp(value):
    """A timezone-aware UTC datetime from what any backend returns."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        # SQLite's text and MariaDB's DATETIME carry no zone: we always store UTC there.
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


@contextlib.contextmanager
def write_lock(database):
    """A transaction that holds the write lock from its first statement.

    On SQLite a deferred transaction that reads before it writes can fail with "database is
    locked" when it upgrades its lock; BEGIN IMMEDIATE takes the lock up front and waits for
    it through the busy timeout instead.
    """
    if kind(database) == "sqlite":
        with database.atomic("IMMEDIATE") as txn:
            yield txn
    else:
        with database.atomic() as txn:
            yield txn


@contextlib.contextmanager
def migration_lock(database):
    """Serialise migrations across processes for the duration of the block.

    SQLite: one IMMEDIATE transaction around all of them (its DDL is transactional).
    PostgreSQL: a transaction-scoped advisory lock. MariaDB/MySQL commit DDL implicitly, so a
    named lock held by the connection (GET_LOCK) serialises instead.
    """
    family = kind(database)
    if family == "sqlite":
        with database.atomic("IMMEDIATE"):
            yield
    elif family == "postgresql":
        with database.atomic():
            database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            yield
    else:
        with database.connection_context():
            database.execute_sql("SELECT GET_LOCK(%s, %s)", (MIGRATION_LOCK_NAME, 60))
            try:
                yield
            finally:
                database.execute_sql("SELECT RELEASE_LOCK(%s)", (MIGRATION_LOCK_NAME,))


MIGRATION_LOCK_KEY = 0x5E55_1057  # any constant shared by every process of this library
MIGRATION_LOCK_NAME = "sessionstate_migrations"
