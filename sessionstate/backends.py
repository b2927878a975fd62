"""Everything that differs between SQLite, PostgreSQL and MariaDB/MySQL, in one place.

The rest of the package speaks peewee; this module answers the few questions whose answer
depends on the server: which driver a URL needs, how a fresh connection is set up, how a
timestamp is written, how deep a JSON value may nest, and how to serialise migrations.
"""

import contextlib
import datetime as dt
import importlib.util
import random
import time

import peewee as pw

from .errors import DatabaseBusy

UTC = dt.timezone.utc

# How deep a JSON value may nest. MariaDB's JSON_VALID check fails at 32 levels ("Limit of
# 32 on JSON nested structures depth is reached"), so 31 is the most it stores; SQLite's
# json() stops at 1000 in older releases. Python's own json module recurses once per level
# and raises RecursionError near sys.getrecursionlimit() (1000) minus the caller's stack
# depth, so 512 leaves room for deep call stacks. We refuse before writing, so every backend
# answers with InvalidStateData, never a driver error or a RecursionError.
JSON_MAX_DEPTH = {"sqlite": 512, "postgresql": 512, "mysql": 31}

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
    else:
        with database.connection_context():  # fail here, as on MariaDB, if unreachable
            pass
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
            if "locked" not in str(exc):
                raise
            if time.monotonic() > deadline:
                raise DatabaseBusy("could not switch %s to WAL: %s" % (database.database, exc))
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
        # isoformat pads the year to four digits (strftime's %Y does not below 1000).
        return value.isoformat(sep=" ", timespec="microseconds")
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
        opened_here = database.is_closed()  # keep a connection the caller already had open
        database.connect(reuse_if_open=True)
        try:
            got = database.execute_sql("SELECT GET_LOCK(%s, %s)",
                                       (MIGRATION_LOCK_NAME, MIGRATION_LOCK_SECONDS)).fetchone()[0]
            if got != 1:
                raise DatabaseBusy("another process held the migration lock for %d s"
                                   % MIGRATION_LOCK_SECONDS)
            try:
                yield
            finally:
                database.execute_sql("SELECT RELEASE_LOCK(%s)", (MIGRATION_LOCK_NAME,))
        finally:
            if opened_here:
                database.close()


MIGRATION_LOCK_KEY = 0x5E55_1057  # any constant shared by every process of this library
MIGRATION_LOCK_NAME = "sessionstate_migrations"
MIGRATION_LOCK_SECONDS = 60


def append_to_array(database, field, messages, placeholder=None):
    """SQL for "the JSON array in `field` (NULL read as []) with `messages` appended".

    Written around peewee's JSONField.append(), which appends a single value and leaves a
    NULL history NULL; here the whole batch goes in one expression, inside the database.
    With `placeholder` (name -> SQL node), the expression takes placeholders where the
    messages' values go, named as in append_values(), so that it can be compiled once.
    """
    family = kind(database)
    dumps = field._dumps
    if family == "postgresql":
        batch = (placeholder("batch") if placeholder
                 else database._adapter.jsonb_type(list(messages), dumps=dumps))
        return pw.Expression(pw.fn.COALESCE(field, pw.SQL("'[]'::jsonb")), "||", batch)
    if family == "mysql":
        batch = (placeholder("batch") if placeholder
                 else pw.Value(dumps(list(messages)), converter=False))
        if not database.mariadb:
            batch = pw.Cast(batch, "JSON")
        return pw.fn.JSON_MERGE_PRESERVE(pw.fn.COALESCE(field, pw.fn.JSON_ARRAY()), batch)
    # SQLite: json_insert(doc, '$[#]', value, ...) appends pairs left to right; SQLite caps a
    # function's arguments (127 by default), so long batches nest one call per chunk.
    expression = pw.fn.COALESCE(field, pw.fn.json("[]"))
    for start in range(0, len(messages), SQLITE_APPEND_CHUNK):
        arguments = []
        for index in range(start, min(start + SQLITE_APPEND_CHUNK, len(messages))):
            value = placeholder("m%d" % index) if placeholder else dumps(messages[index])
            arguments += ["$[#]", pw.fn.json(value)]
        expression = pw.fn.json_insert(expression, *arguments)
    return expression


def append_values(database, field, messages):
    """The values of the placeholders of append_to_array(..., placeholder) for `messages`."""
    family = kind(database)
    dumps = field._dumps
    if family == "postgresql":
        return {"batch": database._adapter.jsonb_type(list(messages), dumps=dumps)}
    if family == "mysql":
        return {"batch": dumps(list(messages))}
    return {"m%d" % index: dumps(message) for index, message in enumerate(messages)}


SQLITE_APPEND_CHUNK = 60


def recent_messages(database, state_id, limit, loads):
    """The last `limit` items of a state's history, oldest first, or None if no such state.

    The slicing happens in the database, so the rest of a long history never reaches Python.
    """
    family = kind(database)
    if family == "postgresql":
        sql = ("SELECT e.value::text, CASE WHEN e.ord IS NULL THEN NULL ELSE 'json' END FROM session_states s "
               "LEFT JOIN LATERAL jsonb_array_elements(s.conversation_history) "
               "WITH ORDINALITY AS e(value, ord) ON true "
               "WHERE s.id = %s ORDER BY e.ord DESC LIMIT %s")
    elif family == "mysql":
        sql = ("SELECT jt.value, CASE WHEN jt.ord IS NULL THEN NULL ELSE 'json' END FROM session_states s "
               "LEFT JOIN JSON_TABLE(s.conversation_history, '$[*]' COLUMNS "
               "(ord FOR ORDINALITY, value JSON PATH '$')) AS jt ON 1 "
               "WHERE s.id = %s ORDER BY jt.ord DESC LIMIT %s")
    else:
        # json_each gives containers as JSON text and scalars as SQL values, with their type.
        sql = ("SELECT e.value, e.type FROM session_states s "
               "LEFT JOIN json_each(s.conversation_history) AS e "
               "WHERE s.id = ? ORDER BY e.key DESC LIMIT ?")
    rows = database.execute_sql(sql, (state_id, max(limit, 1))).fetchall()
    if not rows:
        return None
    items = [_json_item(value, kind_, loads) for value, kind_ in rows if kind_ is not None]
    return items[::-1][-limit:] if limit else []


_SQLITE_JSON_CONSTANTS = {"true": True, "false": False, "null": None}


def _json_item(value, item_type, loads):
    if item_type in ("json", "object", "array"):
        return loads(value)
    if item_type in _SQLITE_JSON_CONSTANTS:
        return _SQLITE_JSON_CONSTANTS[item_type]
    return value


def locked(query, database):
    """`query` locking the rows it reads until the transaction ends (servers).

    SQLite needs no row lock: write_lock() already holds the database's write lock.
    """
    if kind(database) == "sqlite":
        return query
    return query.for_update()


# Errors that mean "try again": lock contention, deadlock victims, serialisation failures.
TRANSIENT_ERROR_MARKERS = (
    "database is locked",  # SQLite, past the busy timeout
    "deadlock",  # PostgreSQL 40P01, MariaDB 1213
    "could not serialize",  # PostgreSQL 40001
    "lock wait timeout",  # MariaDB 1205
    "(1213,",
    "(1205,",
)


TRANSIENT_ATTEMPTS = 8  # lock timeouts, deadlock victims: retried this often, then DatabaseBusy


def with_retries(operation):
    """Run `operation`, retrying on lock contention; DatabaseBusy if it never gets through.

    `operation` must be safe to run again: a whole transaction, or one statement.
    """
    for attempt in range(TRANSIENT_ATTEMPTS):
        try:
            return operation()
        except pw.OperationalError as exc:
            if not is_transient(exc):
                raise
            if attempt == TRANSIENT_ATTEMPTS - 1:
                raise DatabaseBusy("the database stayed busy after %d attempts: %s"
                                   % (TRANSIENT_ATTEMPTS, exc)) from exc
            time.sleep(random.uniform(0.005, 0.02) * (attempt + 1))


def is_transient(error):
    text = str(error).lower()
    return isinstance(error, pw.OperationalError) and any(
        marker in text for marker in TRANSIENT_ERROR_MARKERS)
