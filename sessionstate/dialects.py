"""Everything that differs between SQLite, PostgreSQL and MariaDB/MySQL: one class per backend.

The rest of the package asks ``of(database)`` (or ``for_scheme(scheme)``) for the dialect and
calls it; nothing else tests which backend it runs on. A dialect holds the connection
settings, how timestamps and JSON values go in and come out, how deep JSON may nest, the SQL
of the in-database append and tail slice, the write and migration locks, and which errors
mean "try again" or "the connection is gone".
"""

import asyncio
import base64
import contextlib
import datetime as dt
import importlib.util
import json
import pathlib
import select
import sys
import time

import peewee as pw

from . import jsoncodec
from .errors import ConfigurationError, DatabaseBusy

UTC = dt.timezone.utc
SQLITE_BUSY_TIMEOUT_SECONDS = 10
CONNECT_TIMEOUT_SECONDS = 5  # a server that is down fails a call within this
MIGRATION_LOCK_KEY = 0x5E55_1057  # any constant shared by every process of this library
MIGRATION_LOCK_NAME = "sessionstate_migrations"
MIGRATION_LOCK_SECONDS = 60


class Dialect:
    """What every backend answers; the subclasses below override what differs."""

    name = None
    schemes = ()  # URL scheme prefixes, as in playhouse.db_url
    database_class = None
    driver = None  # (module to import, extra that installs it)
    # Python's json recurses once per level (RecursionError near 1000): 512 leaves room.
    json_max_depth = 512
    update_returning = True  # UPDATE ... RETURNING gives the new version in one statement
    transient_markers = ()  # lock contention, deadlock victims: the statement may run again
    reconnect_attempts = 2  # a lost connection: retried at once, then after a pause
    disconnect_markers = ()  # the connection is gone
    missing_table_markers = ()  # the schema is not there: not migrated
    tail_sql = None
    async_class = None  # its async database class, in sessionstate.aiodrivers
    async_driver = None  # the module it needs (installed by the "async" extra)

    def matches(self, scheme):
        return scheme.split("+", 1)[0].startswith(self.schemes)

    def check_url(self, url, parts, shown):
        """Refuse, with ConfigurationError, a URL this backend cannot use (shown: masked)."""

    def missing_driver(self):
        """The extra to install when this backend's driver cannot be imported, else None."""
        if self.driver is None or importlib.util.find_spec(self.driver[0]):
            return None
        return self.driver[1]

    def connect_params(self):
        """Keyword arguments for the peewee database class of this backend."""
        return {}

    def sleep(self, seconds):
        """Wait between retries (an async dialect lets its event loop run meanwhile)."""
        time.sleep(seconds)

    def bind_large(self, sql, params):
        """(sql, params) to execute: where a driver would stall an event loop on a large
        value, the dialect may put it in the SQL itself."""
        return sql, params

    def async_params(self, params):
        """Keyword arguments for async_class, from playhouse.db_url.parse()'s for the URL."""
        return dict(params, **self.connect_params())

    def prepare(self, database):
        """Finish setting up a database that playhouse.db_url has built; fail if unreachable."""
        with database.connection_context():
            pass

    def timestamp_param(self, value):
        """The parameter for an aware UTC datetime."""
        return value

    def json_param(self, value):
        """The parameter for a JSON value (already validated)."""
        return jsoncodec.dumps(value)

    def json_column(self, field):
        """What to select for a JSON column read whole (the column itself, here)."""
        return field

    def json_value(self, value):
        """The Python value of what the driver returns for a JSON column."""
        return jsoncodec.loads(value) if isinstance(value, (str, bytes)) else value

    def append_expression(self, field, count, placeholder):
        """SQL for "the JSON array in `field` (NULL as []) with `count` values appended".

        placeholder(name) stands where append_values() puts the messages.
        """
        raise NotImplementedError

    def append_values(self, messages):
        return {"batch": self.json_param(list(messages))}

    def remove_last_expression(self, field):
        """SQL for "the JSON array in `field` without its last item"."""
        raise NotImplementedError

    def tail(self, database, state_id, limit):
        """The last `limit` items of a state's history, oldest first; None: no such state.

        The slicing happens in the database, so the rest of a long history never reaches
        Python.
        """
        rows = database.execute_sql(self.tail_sql, (state_id, limit)).fetchall()
        return tail_items(rows, limit)

    write_begin = "BEGIN"  # what write_lock's transaction sends first (peewee's begin())

    @contextlib.contextmanager
    def write_lock(self, database):
        """A transaction that holds the write lock (servers: row locks as it goes)."""
        with database.atomic() as txn:
            yield txn

    def lock_rows(self, query):
        """`query`, locking the rows it reads until the transaction ends."""
        return query.for_update()

    def migration_lock(self, database):
        raise NotImplementedError

    def is_transient(self, error):
        return isinstance(error, pw.OperationalError) and _mentions(error,
                                                                    self.transient_markers)

    def idle_connection_lost(self, database):
        """True when this thread's open connection died while idle (checked before a write
        whose outcome could not be known if it died during it)."""
        return False

    def is_missing_table(self, error):
        return isinstance(error, pw.DatabaseError) and _mentions(error,
                                                                 self.missing_table_markers)

    def is_disconnect(self, error):
        return isinstance(error, (pw.OperationalError, pw.InterfaceError)) and _mentions(
            error, self.disconnect_markers)

    def never_sent(self, error):
        """True when the driver refused to send the statement (its connection known dead):
        a write that failed so was not applied and may run again."""
        return _mentions(error, self.never_sent_markers)

    never_sent_markers = ()


def _sqlstate(error):
    """The SQLSTATE of a driver error, or of the one peewee wrapped (its first argument)."""
    cause = error.args[0] if error.args else None
    return (getattr(error, "sqlstate", None) or getattr(cause, "sqlstate", None)
            or getattr(error.__context__, "sqlstate", None))


def _mentions(error, markers):
    text = str(error).lower()
    return any(marker in text for marker in markers)


class SqliteDialect(Dialect):
    name = "sqlite"
    schemes = ("sqlite",)
    database_class = pw.SqliteDatabase
    transient_markers = ("database is locked",)  # past the busy timeout
    missing_table_markers = ("no such table",)
    # json_each gives containers as JSON text and scalars as SQL values, with their type.
    tail_sql = ("SELECT e.value, e.type FROM session_states s "
                "LEFT JOIN json_each(s.conversation_history) AS e "
                "WHERE s.id = ? ORDER BY e.key DESC LIMIT ?")
    APPEND_CHUNK = 60  # SQLite caps a function's arguments (127 by default)
    async_class = "AsyncSqliteDatabase"
    async_driver = "aiosqlite"

    def check_url(self, url, parts, shown):
        """Three slashes, and a folder that exists, before SQLite says "unable to open"."""
        if parts.netloc or not url.startswith(parts.scheme + "://"):
            raise ConfigurationError(
                "malformed SQLite URL %r: local files take three slashes, "
                "sqlite:///relative/path.db or sqlite:////absolute/path.db" % shown)
        path = parts.path[1:]
        if path in ("", ":memory:") or path.startswith("file:"):
            return
        folder = pathlib.Path(path).expanduser().parent
        if not folder.is_dir():
            raise ConfigurationError(
                "the folder %s for the SQLite database %s does not exist" % (folder, path))

    def connect_params(self):
        return {
            "timeout": SQLITE_BUSY_TIMEOUT_SECONDS,
            "pragmas": {
                "foreign_keys": 1,  # ON DELETE CASCADE depends on it, per connection.
                "busy_timeout": SQLITE_BUSY_TIMEOUT_SECONDS * 1000,
                "synchronous": "normal",  # safe with WAL: a killed process loses nothing.
            },
        }

    def prepare(self, database):
        """Switch a SQLite file to WAL once; retry while another process does the same.

        Setting journal_mode needs an exclusive lock for a moment. On a brand-new file,
        several processes doing it at once get "database is locked" without going through
        the busy handler, so we retry for the length of the busy timeout.
        """
        name = database.database
        if name in ("", ":memory:") or name.startswith("file::memory:"):
            return
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_SECONDS
        while True:
            try:
                with database.connection_context():
                    database.execute_sql("PRAGMA journal_mode=wal")
                return
            except pw.OperationalError as exc:
                if not self.is_transient(exc):
                    raise
                if time.monotonic() > deadline:
                    raise DatabaseBusy("could not switch %s to WAL: %s" % (name, exc)) from exc
                time.sleep(0.05)

    def json_column(self, field):
        # As bytes: sqlite3 skips decoding the UTF-8 text to str, and the codec reads bytes
        # (about a fifth of a 1,000-message get_state).
        return pw.Cast(field, "BLOB")

    _last_timestamp = (None, None)  # (datetime, its text): a write stores one instant 2-4 times

    def timestamp_param(self, value):
        # No timestamp type: fixed-width ISO text (microseconds and +00:00 always there), so
        # text order is time order; isoformat pads years below 1000, strftime's %Y does not.
        # isoformat is most of a timestamp's cost; the last one formatted is kept (one tuple,
        # replaced whole, so threads never see half of it; `is`: the tuple holds the datetime).
        last = self._last_timestamp
        if last[0] is value:
            return last[1]
        text = value.isoformat(sep=" ", timespec="microseconds")
        self._last_timestamp = (value, text)
        return text

    def append_expression(self, field, count, placeholder):
        # json_insert(doc, '$[#]', value, ...) appends pairs left to right; long batches nest
        # one call per chunk.
        expression = pw.fn.COALESCE(field, pw.fn.json("[]"))
        for start in range(0, count, self.APPEND_CHUNK):
            arguments = []
            for index in range(start, min(start + self.APPEND_CHUNK, count)):
                arguments += ["$[#]", pw.fn.json(placeholder("m%d" % index))]
            expression = pw.fn.json_insert(expression, *arguments)
        return expression

    def append_values(self, messages):
        return {"m%d" % index: jsoncodec.dumps(message) for index, message in enumerate(messages)}

    # The version, and the history's last item as (value, kind) as in tail_sql.
    last_item_sql = ("SELECT version, json_extract(conversation_history, '$[#-1]'), "
                     "json_type(conversation_history, '$[#-1]') FROM session_states WHERE id = ?")

    def remove_last_expression(self, field):
        return pw.fn.json_remove(field, "$[#-1]")

    write_begin = "BEGIN IMMEDIATE"

    @contextlib.contextmanager
    def write_lock(self, database):
        # A deferred transaction that reads before it writes can fail with "database is
        # locked" when it upgrades its lock; IMMEDIATE takes it up front, through the busy
        # handler. (peewee's begin() sends write_begin for it.)
        with database.atomic("IMMEDIATE") as txn:
            yield txn

    def lock_rows(self, query):
        return query  # write_lock() holds the whole database already

    def migration_lock(self, database):
        return database.atomic("IMMEDIATE")  # SQLite's DDL is transactional


class PostgresqlDialect(Dialect):
    name = "postgresql"
    schemes = ("postgres", "psycopg")
    database_class = pw.PostgresqlDatabase
    driver = ("psycopg", "sessionstate[postgres]")
    async_class = "AsyncPostgresqlDatabase"
    async_driver = "asyncpg"
    transient_markers = ("deadlock", "could not serialize")  # 40P01, 40001
    disconnect_markers = (
        "terminating connection", "server closed the connection", "connection already closed",
        "the connection is closed", "connection is lost", "consuming input failed",
        "connection refused", "could not connect", "server conn crashed", "ssl connection",
        "administrator command", "connection timeout expired", "connection failed",
        "the database system is shutting down", "the database system is starting up",
        "no connection to the server", "could not receive data", "could not send data",
    )
    # A jsonpath slice reads only the tail (35x faster than unnesting at 10,000 items); lax
    # mode clamps it to the array, and a NULL history gives NULL.
    tail_sql = ("SELECT jsonb_path_query_array(conversation_history, "
                "('$[last-' || %s || ' to last]')::jsonpath)::text "
                "FROM session_states WHERE id = %s")

    def tail(self, database, state_id, limit):
        rows = database.execute_sql(self.tail_sql, (str(limit - 1), state_id)).fetchall()
        if not rows:
            return None
        return jsoncodec.loads(rows[0][0]) if rows[0][0] is not None else []

    def connect_params(self):
        return {"connect_timeout": CONNECT_TIMEOUT_SECONDS}

    def is_missing_table(self, error):
        return _sqlstate(error) == "42P01"  # undefined_table

    def idle_connection_lost(self, database):
        # A healthy idle connection has nothing to read; a server that ended it has sent its
        # "terminating connection" (or closed the socket), so the socket is readable. No
        # round trip, unlike a ping.
        if database.is_closed():
            return False
        connection = database.connection()
        if connection.closed or connection.broken:
            return True
        readable, _, _ = select.select([connection.fileno()], [], [], 0)
        return bool(readable)

    def json_param(self, value):
        from psycopg.types.json import Jsonb  # the postgres extra; imported once it is used

        # jsonb prints 1e+16 back as 10000000000000000 (an int): write such floats out.
        return Jsonb(value, dumps=jsoncodec.dumps_for_postgresql)

    def json_value(self, value):
        return value  # psycopg has parsed jsonb already

    def append_expression(self, field, count, placeholder):
        return pw.Expression(pw.fn.COALESCE(field, pw.SQL("'[]'::jsonb")), "||",
                             placeholder("batch"))

    last_item_sql = ("SELECT version, (conversation_history -> -1)::text, CASE WHEN "
                     "conversation_history -> -1 IS NULL THEN NULL ELSE 'json' END "
                     "FROM session_states WHERE id = %s")

    def remove_last_expression(self, field):
        return pw.Expression(field, "-", pw.SQL("(-1)"))  # jsonb minus an index

    def migration_lock(self, database):
        return _advisory_lock(database)


@contextlib.contextmanager
def _advisory_lock(database):
    with database.atomic():
        database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        yield


class MysqlDialect(Dialect):
    name = "mysql"
    schemes = ("mysql", "mariadb")
    database_class = pw.MySQLDatabase
    driver = ("pymysql", "sessionstate[mysql]")
    async_class = "AsyncMySQLDatabase"
    async_driver = "aiomysql"
    # MariaDB's JSON_VALID fails at 32 levels ("Limit of 32 on JSON nested structures").
    json_max_depth = 31
    update_returning = False  # MariaDB has RETURNING for INSERT and DELETE only
    transient_markers = ("deadlock", "lock wait timeout", "(1213,", "(1205,")
    missing_table_markers = ("(1146,",)  # Table '...' doesn't exist
    disconnect_markers = (
        "(2006,", "(2013,", "(2003,", "(2055,", "(1927,", "(4031,", "(1053,",
        "lost connection", "server has gone away", "already closed", "connection was killed",
        "interfaceerror(0", "(0, '')", "can't connect",
    )
    tail_sql = ("SELECT jt.value, CASE WHEN jt.ord IS NULL THEN NULL ELSE 'json' END "
                "FROM session_states s LEFT JOIN JSON_TABLE(s.conversation_history, '$[*]' "
                "COLUMNS (ord FOR ORDINALITY, value JSON PATH '$')) AS jt ON 1 "
                "WHERE s.id = %s ORDER BY jt.ord DESC LIMIT %s")

    def connect_params(self):
        # Our DATETIME(6) columns hold UTC; NOW() and friends must agree, whatever the
        # server's own zone is.
        return {"init_command": "SET time_zone = '+00:00'",
                "connect_timeout": CONNECT_TIMEOUT_SECONDS}

    def timestamp_param(self, value):
        return value.replace(tzinfo=None)  # DATETIME(6) holds UTC, without a zone

    def idle_connection_lost(self, database):
        # PyMySQL exposes no socket to look at: peewee's check pings the server.
        return not database.is_closed() and not database.is_connection_usable()

    def json_param(self, value):
        # The JSON functions (the in-database append) write json.dumps' format; the stdlib
        # writes here too, so every row's text keeps that one format. A JSON column and
        # JSON_MERGE_PRESERVE both take the text as it is, on MariaDB and MySQL alike.
        return json.dumps(value)

    def append_expression(self, field, count, placeholder):
        return pw.fn.JSON_MERGE_PRESERVE(pw.fn.COALESCE(field, pw.fn.JSON_ARRAY()),
                                         placeholder("batch"))

    last_item_sql = ("SELECT version, JSON_EXTRACT(conversation_history, CONCAT('$[', "
                     "JSON_LENGTH(conversation_history) - 1, ']')), CASE WHEN "
                     "JSON_LENGTH(conversation_history) > 0 THEN 'json' END "
                     "FROM session_states WHERE id = %s")

    def remove_last_expression(self, field):
        return pw.fn.JSON_REMOVE(field, pw.fn.CONCAT("$[", pw.fn.JSON_LENGTH(field) - 1, "]"))

    def migration_lock(self, database):
        return _named_lock(database)


@contextlib.contextmanager
def _named_lock(database):
    """GET_LOCK held by the connection: MariaDB/MySQL commit DDL implicitly, so no transaction
    can serialise migrations there."""
    opened_here = database.is_closed()  # keep a connection the caller already had open
    if opened_here:
        database.connect()
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


def _await(awaitable):
    """Await from sync code running in pwasyncio's greenlet bridge (the loop runs meanwhile)."""
    return sys.modules["playhouse.pwasyncio"].await_(awaitable)


def let_the_loop_run():
    """Let the event loop run other tasks (from code in the greenlet bridge)."""
    _await(asyncio.sleep(0))


def let_the_loop_run_if_bridged():
    """let_the_loop_run() from code in the greenlet bridge; elsewhere (a task started from
    inside it, which inherits its context variables) nothing."""
    if sys.modules["greenlet"].getcurrent().parent is not None:
        let_the_loop_run()


def _pause_if_large(value, items=2000):
    """Let the loop run between a large value's validation and its encoding (each can take
    10-25 ms for 5 MB), rather than hold it for both."""
    if isinstance(value, (list, dict)) and len(value) > items:
        let_the_loop_run()


class AsyncMixin:
    """What every async dialect shares: waiting never blocks the event loop."""

    # A server restart kills every pooled connection: a call may meet several dead ones
    # before the pool opens a fresh one (the connect timeout still bounds the whole call).
    reconnect_attempts = 11

    # Characters: a longer array is decoded in pieces, the loop running between them. Below
    # it, one decode holds the loop for at most about 9 ms (2.5 MB; pieces cost 30% more).
    LARGE_JSON = 5 * 512 * 1024
    json_text = staticmethod(jsoncodec.dumps)  # a JSON value as the async driver takes it

    def sleep(self, seconds):
        _await(asyncio.sleep(seconds))

    def idle_connection_lost(self, database):
        return False  # the driver's pool checks connections as it hands them out

    def json_param(self, value):
        _pause_if_large(value)
        return self.json_text(value)

    def is_large_json(self, value):
        """True if json_value() decodes `value` in pieces, letting the loop run between them
        (which only code in the greenlet bridge can do)."""
        return isinstance(value, (str, bytes)) and len(value) > self.LARGE_JSON

    def json_value(self, value):
        # Decoding 5 MB of history holds the thread for 30-50 ms: a large array is decoded
        # a piece at a time, the event loop running between pieces.
        if self.is_large_json(value):
            return jsoncodec.loads_in_pieces(value, let_the_loop_run)
        return jsoncodec.loads(value) if isinstance(value, (str, bytes)) else value


class AsyncSqliteDialect(AsyncMixin, SqliteDialect):
    """SQLite through aiosqlite (playhouse.pwasyncio): the same SQL and settings."""


class AsyncPostgresqlDialect(AsyncMixin, PostgresqlDialect):
    """PostgreSQL through asyncpg: JSON goes in as text and comes back decoded; asyncpg's
    own errors are not wrapped by peewee, so they are classified by their SQLSTATE."""

    def async_params(self, params):
        params = dict(params)
        params["timeout"] = CONNECT_TIMEOUT_SECONDS  # asyncpg's name for the connect timeout
        # asyncpg's pool resets every released connection (advisory locks, cursors, LISTEN,
        # settings): a round trip per call, for state sessionstate never leaves behind
        # (pwasyncio rolls back an open transaction itself).
        params["reset"] = _keep_connection_state
        return params

    json_text = staticmethod(jsoncodec.dumps_for_postgresql)  # as text, for the text codec

    # asyncpg checks its connection's state before it sends anything.
    never_sent_markers = ("cannot switch to state", "connection is closed",
                          "released back to the pool")

    def is_transient(self, error):
        return _sqlstate(error) in ("40P01", "40001") or super().is_transient(error)

    def is_disconnect(self, error):
        state = _sqlstate(error) or ""
        return (state.startswith("08") or state in ("57P01", "57P02", "57P03")
                or isinstance(error, (ConnectionError, TimeoutError))
                or _mentions(error, self.disconnect_markers + ASYNC_DISCONNECT_MARKERS))


class AsyncMysqlDialect(AsyncMixin, MysqlDialect):
    """MariaDB/MySQL through aiomysql (PyMySQL underneath): the same SQL and settings, and
    large values kept from stalling the event loop."""

    LARGE = 64 * 1024  # characters: below this, escaping costs well under a millisecond

    # json_text is AsyncMixin's orjson-backed dumps: json.dumps (the sync dialect's, for the
    # in-database append's format) holds the loop for about 55 ms on a 5 MB history.

    def bind_large(self, sql, params):
        # aiomysql escapes every string parameter with PyMySQL's escape_string in the loop's
        # thread (115-190 ms for 5 MB, with no hook to do it elsewhere), then formats the
        # whole statement with %. With a large string, every parameter goes in the SQL
        # instead, as a literal no escaping can get wrong (text as base64, encoded a piece at
        # a time), and the statement is sent without parameters, so nothing formats it.
        if not any(isinstance(value, str) and len(value) > self.LARGE for value in params):
            return sql, params
        pieces = sql.split("%s")
        if "%" in "".join(pieces) or len(pieces) != len(params) + 1:
            return sql, params  # not a statement these literals can stand in for
        literals = [_mysql_literal(value) for value in params]
        if None in literals:
            return sql, params
        out = [pieces[0]]
        for literal, piece in zip(literals, pieces[1:]):
            out += [literal, piece]
        let_the_loop_run()  # between the encoding and the sending
        return "".join(out), ()

    def async_params(self, params):
        params = dict(params, **self.connect_params())
        if "passwd" in params:  # db_url.parse's name; aiomysql wants "password"
            params["password"] = params.pop("passwd")
        return params

    def is_disconnect(self, error):
        return isinstance(error, (ConnectionError, TimeoutError)) or _mentions(
            error, self.disconnect_markers + ASYNC_DISCONNECT_MARKERS)


def _mysql_literal(value):
    """SQL for a parameter of a MariaDB/MySQL statement, or None for a type not handled."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return "CONVERT(FROM_BASE64('%s') USING utf8mb4)" % _base64_in_pieces(value)
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return "'%s'" % value.isoformat(sep=" ", timespec="microseconds")
    return None


def _base64_in_pieces(text, piece=3 * 350_000):
    """The UTF-8 of `text` in base64, about a megabyte at a time (a few ms each), the loop
    running between pieces of a large one."""
    data, out = text.encode("utf-8"), []
    for start in range(0, len(data), piece):
        out.append(base64.b64encode(data[start:start + piece]).decode("ascii"))
        if len(data) > piece:
            let_the_loop_run()
    return "".join(out)


async def _keep_connection_state(connection):
    """asyncpg's pool `reset`: nothing to reset (see AsyncPostgresqlDialect.async_params)."""


# asyncpg, on a connection the server ended while it sat in the pool: "cannot switch to
# state 11; another operation (2) is in progress"; on one that ended while a task held it
# (its pool takes it back at once): "cannot call Connection.execute(): connection has been
# released back to the pool".
ASYNC_DISCONNECT_MARKERS = ("connection was closed", "connection is closed",
                            "connection refused", "pool is closed", "cannot perform operation",
                            "cannot switch to state", "released back to the pool")

DIALECTS = (SqliteDialect(), PostgresqlDialect(), MysqlDialect())
ASYNC_DIALECTS = {"sqlite": AsyncSqliteDialect(), "postgresql": AsyncPostgresqlDialect(),
                  "mysql": AsyncMysqlDialect()}


def of(database):
    """The dialect of a peewee database (or of the database a DatabaseProxy stands for)."""
    if isinstance(database, pw.DatabaseProxy):
        database = database.obj
    dialect = _BY_CLASS.get(type(database))  # asked several times per call: one lookup
    if dialect is None:
        dialect = _BY_CLASS[type(database)] = _dialect_of_class(database)
    return dialect


_BY_CLASS = {}  # database class -> its dialect


def _dialect_of_class(database):
    if database is None:
        raise ConfigurationError("no database is connected: call sessionstate.connect(url) "
                                 "before using the models")
    for dialect in DIALECTS:
        if isinstance(database, dialect.database_class):
            return ASYNC_DIALECTS[dialect.name] if _is_async(database) else dialect
    raise TypeError("unsupported database: %r" % (database,))


def _is_async(database):
    # pwasyncio needs greenlet (the "async" extra): only look once something imported it.
    module = sys.modules.get("playhouse.pwasyncio")
    return module is not None and isinstance(database, module.AsyncDatabaseMixin)


def for_scheme(scheme):
    """The dialect of a URL scheme such as 'postgresql+pool', or None."""
    for dialect in DIALECTS:
        if dialect.matches(scheme):
            return dialect
    return None


_SQLITE_CONSTANTS = {"true": True, "false": False, "null": None}


def tail_items(rows, limit):
    """The JSON items of a tail_sql result, oldest first; None when the state does not exist.

    Rows are (value, kind): kind None for a state with an empty history, 'json' (servers) or
    SQLite's json_each type names ('object', 'array', 'true', 'integer', 'text', ...).
    """
    if not rows:
        return None
    items = [_tail_item(value, kind) for value, kind in rows if kind is not None]
    return items[::-1][-limit:]


def last_item(row):
    """(version, the history's last item, whether there is one) from a last_item_sql row."""
    version, value, kind = row
    if kind is None:
        return version, None, False
    return version, _tail_item(value, kind), True


def _tail_item(value, kind):
    if kind in ("json", "object", "array"):
        return jsoncodec.loads(value)
    return _SQLITE_CONSTANTS.get(kind, value)
