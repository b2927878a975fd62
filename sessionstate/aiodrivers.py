"""The async databases aio opens: playhouse.pwasyncio's, each statement one call to its driver.

pwasyncio supplies the pool, the connection of each task, the greenlet bridge and the
transactions; these subclasses change how a statement reaches the driver, and run() keeps
its finished greenlets for the next call instead of starting one per call. pwasyncio
hands a SQLite statement to aiosqlite's thread three times (execute, fetchall, close), and
prepares each PostgreSQL statement anew, outside asyncpg's statement cache (a Parse round
trip every time). Here a SQLite statement is one hop and a PostgreSQL one a cached
``fetch``/``execute``; and on both a released connection is kept at hand for the next call
(_IdleConnections). On MariaDB/MySQL a statement without parameters is sent unformatted.
The override point is peewee's public ``execute_sql``/``cursor()`` pair (pwasyncio's
``aexecute_sql``), so transactions' BEGIN and COMMIT take the same path.
"""

import re
import threading

import greenlet
import peewee as pw
from playhouse import pwasyncio

# peewee's translation of driver exceptions (sqlite3.IntegrityError -> peewee.IntegrityError,
# asyncpg's UniqueViolationError -> peewee.IntegrityError, ...), built from its public parts
# as peewee builds its own.
TRANSLATE_ERRORS = pw.ExceptionWrapper(pw.EXCEPTIONS)


class _Cursor:
    """What cursor() gives peewee (BEGIN, COMMIT, ROLLBACK): execute() runs one statement."""

    def __init__(self, database):
        self.database = database

    def execute(self, sql, params=None):
        return pwasyncio.await_(self.database.aexecute_sql(sql, params))


class _ReusedGreenlets:
    """run() as pwasyncio's (fn in a greenlet whose await_() the loop awaits), on greenlets
    kept for the next call.

    Starting a new greenlet costs 8-9 µs here (CPython gives each one a fresh frame stack,
    allocated on its first call and freed when it dies), about a tenth of a short aio call;
    switching into a waiting one costs 0.3 µs. A finished greenlet waits in a per-thread
    stack (greenlets never switch across threads) for the next fn. Errors, cancellation and
    the caller's context variables behave as in pwasyncio's greenlet_spawn.
    """

    async def run(self, fn, *args, **kwargs):
        parent = greenlet.getcurrent()
        idle = _idle_greenlets()
        worker = idle.pop() if idle else greenlet.greenlet(_run_jobs)
        worker.parent = parent
        worker.gr_context = parent.gr_context
        value = worker.switch(fn, args, kwargs)
        while not isinstance(value, _Outcome):  # an awaitable handed over by await_()
            try:
                value = worker.switch(await value)
            except BaseException as exc:  # noqa: BLE001 - thrown into fn, as pwasyncio does
                value = worker.throw(exc)
        worker.gr_context = None  # keeps no task's context alive while idle
        if len(idle) < _IDLE_GREENLETS:
            idle.append(worker)
        return value.result()


_IDLE_GREENLETS = 32  # per thread; more finished at once are left to die
_THREAD = threading.local()


def _idle_greenlets():
    idle = getattr(_THREAD, "idle", None)
    if idle is None:
        idle = _THREAD.idle = []
    return idle


class _Outcome:
    """What a job gave: its value or its exception."""

    __slots__ = ("value", "error")

    def __init__(self, value=None, error=None):
        self.value, self.error = value, error

    def result(self):
        if self.error is not None:
            raise self.error
        return self.value


def _run_jobs(fn, args, kwargs):
    """A kept greenlet's body: run fn, hand its outcome to the parent, wait for the next."""
    while True:
        try:
            outcome = _Outcome(fn(*args, **kwargs))
        except greenlet.GreenletExit:
            raise  # the greenlet is being discarded: let it die
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting caller
            outcome = _Outcome(error=exc)
        fn = args = kwargs = None  # nothing of the finished job kept while idle
        fn, args, kwargs = greenlet.getcurrent().parent.switch(outcome)


class _IdleConnections:
    """A released connection is kept at hand for the next acquire, while no task waits.

    pwasyncio's acquire makes two asyncio.wait_for Tasks (around its pool's creation and its
    pool's acquire) and asyncpg's release an asyncio.shield Task: six to nine event-loop
    iterations per checkout, more than a short statement costs. aio releases its connection
    after every call, so that is paid per call. Here the last released connections wait in
    a stack and the next acquire takes one without yielding. A connection goes back to
    the driver's pool instead when a task is waiting for one (so it is served in turn), when
    it is in a transaction (the pool rolls it back) or dead, and when the pool closes.
    These override pwasyncio's own hooks (_acquire_conn_async, _release_conn), which have no
    public counterpart; test_aiodrivers fails loudly if they change.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.idle_connections = []
        self.acquirers_waiting = 0
        self.keep_idle = True

    async def _acquire_conn_async(self):
        while self.idle_connections:
            connection = self.idle_connections.pop()
            if not connection.stale():
                return connection
            await self.back_to_pool(connection)
        self.acquirers_waiting += 1
        try:
            return await super()._acquire_conn_async()
        finally:
            self.acquirers_waiting -= 1

    async def _release_conn(self, connection):
        if (self.keep_idle and not self.acquirers_waiting and not connection.stale()
                and not self.in_transaction_on(connection.conn)):
            self.idle_connections.append(connection)
            return
        await self.back_to_pool(connection)

    async def back_to_pool(self, connection):
        """pwasyncio's own release: into the driver's pool (or closed, if it is dead)."""
        await super()._release_conn(connection)

    async def close_pool(self):
        self.keep_idle = False
        try:
            while self.idle_connections:
                await self.back_to_pool(self.idle_connections.pop())
            await super().close_pool()
        finally:
            self.keep_idle = True


class _OneCallPerStatement:
    """aexecute_sql through `statement` (one driver call) on the task's connection."""

    async def aexecute_sql(self, sql, params=None):
        return await self.aexecute_on(await self.aconnect(), sql, params)

    async def aexecute_on(self, connection, sql, params=None):
        """aexecute_sql on `connection` (one aconnect() gave), even if it has died since:
        a transaction's statements must not move to another connection midway, as
        aconnect() would move them."""
        self._log_query(sql, params)  # peewee's query log, as pwasyncio's aexecute_sql keeps
        with TRANSLATE_ERRORS:
            return await self.statement(connection.conn, sql, params or ())

    def cursor(self, named_cursor=None):
        return _Cursor(self)


class AsyncSqliteDatabase(_ReusedGreenlets, _IdleConnections, _OneCallPerStatement,
                          pwasyncio.AsyncSqliteDatabase):
    """pwasyncio's SQLite database; a statement is one hop to aiosqlite's thread."""

    @staticmethod
    def in_transaction_on(connection):
        return connection.in_transaction

    @staticmethod
    async def statement(connection, sql, params):
        # aiosqlite's public calls are a hop each (execute, fetchall, close: three per
        # statement). Its Connection._execute(fn) runs fn on its thread in one hop; pwasyncio
        # itself calls it (for create_aggregate and collations). test_aiodrivers fails
        # loudly if aiosqlite drops it.
        return await connection._execute(_sqlite_statement, connection._conn, sql, params)


def _sqlite_statement(connection, sql, params):
    """Run on aiosqlite's thread: execute, read every row, close."""
    cursor = connection.execute(sql, params)
    try:
        rows = cursor.fetchall()
        return pwasyncio.CursorAdapter(rows, lastrowid=cursor.lastrowid,
                                       rowcount=cursor.rowcount,
                                       description=cursor.description)
    finally:
        cursor.close()


class AsyncPostgresqlDatabase(_ReusedGreenlets, _IdleConnections, _OneCallPerStatement,
                              pwasyncio.AsyncPostgresqlDatabase):
    """pwasyncio's PostgreSQL database; statements go through asyncpg's statement cache."""

    @staticmethod
    def in_transaction_on(connection):
        return connection.is_in_transaction()

    async def register_adapters(self, conn):
        """JSON in and out undecoded: sessionstate encodes it (orjson, floats kept exact) and
        decodes it (a large history in pieces, the loop running between them), where
        pwasyncio's codec would decode it whole with json.loads inside asyncpg. jsonb comes
        back as its UTF-8 bytes (binary format: a version byte, then the text), which orjson
        reads as they are; as text, asyncpg decoded them to str and the codec encoded them
        back (0.3 ms of a 1,000-message get_state)."""
        await super().register_adapters(conn)
        await conn.set_type_codec("json", encoder=str, decoder=str, schema="pg_catalog",
                                  format="text")
        await conn.set_type_codec("jsonb", encoder=_jsonb_binary, decoder=_jsonb_text,
                                  schema="pg_catalog", format="binary")

    @staticmethod
    async def statement(connection, sql, params):
        sql, returns_rows = _asyncpg_form(sql, bool(params))
        if returns_rows:
            records = await connection.fetch(sql, *params)
            description = [(key,) for key in records[0].keys()] if records else []
            return pwasyncio.CursorAdapter(records, rowcount=len(records),
                                           description=description)
        status = await connection.execute(sql, *params)  # e.g. "UPDATE 1", "INSERT 0 1"
        count = status.rsplit(" ", 1)[-1]
        return pwasyncio.CursorAdapter([], rowcount=int(count) if count.isdigit() else 0)


JSONB_VERSION = b"\x01"  # the first byte of jsonb's binary format (PostgreSQL 9.4 and later)


def _jsonb_binary(text):
    return JSONB_VERSION + text.encode()


def _jsonb_text(data):
    """The JSON text (UTF-8 bytes) of a jsonb value in binary format."""
    if data[:1] != JSONB_VERSION:
        raise ValueError("unsupported jsonb format version %r" % (data[:1],))
    return data[1:]


_ASYNCPG_FORMS = {}  # (SQL text, has params) -> (asyncpg's SQL text, whether it returns rows)
_PLACEHOLDER = re.compile("%%|%s")
_ROW_STATEMENTS = ("SELECT", "VALUES", "SHOW", "TABLE", "EXPLAIN")


def _asyncpg_form(sql, has_params):
    """peewee's SQL as asyncpg takes it ($1, $2 for %s when there are parameters, as pwasyncio
    translates them), and whether it returns rows (fetch) or a status (execute)."""
    form = _ASYNCPG_FORMS.get((sql, has_params))
    if form is None:
        counter = iter(range(1, 1 << 30))
        text = _PLACEHOLDER.sub(
            lambda match: "%" if match.group(0) == "%%" else "$%d" % next(counter),
            sql) if has_params else sql
        words = sql.lstrip().upper()
        returns_rows = words.startswith(_ROW_STATEMENTS) or " RETURNING " in words or (
            words.startswith("WITH") and not re.search(r"\b(INSERT|UPDATE|DELETE)\b", words))
        form = (text, returns_rows)
        if len(_ASYNCPG_FORMS) > 1000:  # statements with varying text (IN lists): no hoard
            _ASYNCPG_FORMS.clear()
        _ASYNCPG_FORMS[(sql, has_params)] = form
    return form


class AsyncMySQLDatabase(_ReusedGreenlets, _OneCallPerStatement,
                         pwasyncio.AsyncMySQLDatabase):
    """pwasyncio's MariaDB/MySQL database; a statement without parameters is sent unformatted.

    pwasyncio passes () for no parameters, and aiomysql then runs `sql % ()` over the whole
    text: 10-30 ms for the SQL of a 5 MB value (dialects' bind_large puts such values in
    the SQL). Its connections keep pwasyncio's pool: aiomysql notices a connection the server
    ended only when it next reads from it, and its pool checks that before handing one out,
    so an idle connection kept here (_IdleConnections) could take a write to a dead socket.
    """

    @staticmethod
    async def statement(connection, sql, params):
        cursor = await connection.cursor()
        try:
            # Without parameters and without %, `sql % ()` would give sql back unchanged.
            await cursor.execute(sql, params if params or "%" in sql else None)
            rows = await cursor.fetchall()
            return pwasyncio.CursorAdapter(rows, lastrowid=cursor.lastrowid,
                                           rowcount=cursor.rowcount,
                                           description=cursor.description)
        finally:
            await cursor.close()
