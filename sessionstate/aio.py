"""The same operations, awaited: sessionstate for asyncio services.

    from sessionstate import aio
    await aio.connect()                      # the URL as connect() resolves it
    state = await aio.create_session("copilot")
    await aio.append_messages(state.id, [{"role": "user", "content": "hi"}])
    await aio.close()

Each coroutine runs the one implementation of its operation (sessionstate.state, lifecycle,
listing, transfer, migrate) inside peewee's greenlet bridge, ``db.run()`` of
playhouse.pwasyncio, on the async database of the URL: validation, query building and result
handling are shared with the sync API, only the driver underneath is awaited. get_state, a
single read, awaits its statement without the bridge (see _one_read); create_session is
prepared in the bridge and awaits its transaction's statements directly (see _one_write).
Each call releases its pooled connection when it returns, and keeps its transaction inside
itself, so tasks gathered on one loop never wait on each other's open transaction.
"""

import asyncio
import functools
import importlib
import importlib.util
import inspect
import itertools
import weakref

import peewee as pw
from playhouse import db_url

from . import db as connecting
from . import dialects, execution, lifecycle, listing, state, transfer, validation
from .migrate import forget_check, known_at_head
from .migrate import migrate as _migrate
from .migrate import migration_status as _migration_status
from .migrate import rollback as _rollback
from .errors import ConfigurationError, DatabaseUnavailable
from .models import call_with

EXTRA = "sessionstate[async]"
_current = None  # the async database connect() opened
_URLS = weakref.WeakKeyDictionary()  # async database -> its URL (for migrations)


def _async_databases(dialect):
    """sessionstate.aiodrivers (pwasyncio's databases), or ConfigurationError naming the
    extra that installs what they need."""
    missing = [name for name in ("greenlet", dialect.async_driver)
               if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigurationError("the async API on %s needs %s; install it with: pip install "
                                 "'%s'" % (dialect.name, " and ".join(missing), EXTRA))
    # Imported here, not at the top: it imports playhouse.pwasyncio, which needs greenlet.
    from . import aiodrivers
    return aiodrivers


async def connect(url=None, *, pool_size=10):
    """Open the async database of `url` (resolved as connect() does) and use it from now on.

    Returns the playhouse.pwasyncio database, with at most `pool_size` connections (each
    running call holds one). Call it inside the event loop that will use it, and
    ``await close()`` when done.
    """
    global _current
    url = connecting.resolve_url(url)
    dialect = connecting.dialect_of_url(url, driver=False)
    module = _async_databases(dialect)
    params = dialects.ASYNC_DIALECTS[dialect.name].async_params(db_url.parse(url))
    params["pool_size"] = pool_size
    database = getattr(module, dialect.async_class)(**params)
    try:
        await database.run(call_with, database, dialect.prepare, database)
    except Exception as exc:
        await _close_quietly(database)
        if not execution.is_database_error(exc):
            raise
        raise DatabaseUnavailable("cannot open the database %s: %s" % (
            connecting.mask_password(url), connecting.mask_password(str(exc), url))) from exc
    if _current is not None:
        await _close_quietly(_current)
    _current = database
    _URLS[database] = url
    return database


async def close():
    """Release every connection of the async database connect() opened."""
    global _current
    database, _current = _current, None
    if database is not None:
        await _close_quietly(database)


async def _database():
    """The async database connect() opened, connecting to the default URL on first use."""
    return _current if _current is not None else await connect()


async def _close_quietly(database):
    try:
        await database.close_pool()
    except Exception:  # noqa: BLE001 - closing must not hide the outcome that led here
        pass


async def _run(operation, *args, **kwargs):
    """Run a sync operation on the async database, in the greenlet bridge; then release the
    task's connection (unless the caller holds a transaction open)."""
    database = await _database()
    try:
        return await database.run(_bridged, database, operation, *args, **kwargs)
    finally:
        await _release(database)


def _bridged(database, fn, *args, **kwargs):
    """fn on `database`, run in the greenlet bridge: there a large value's check lets the
    loop run between its levels."""
    with validation.pausing(dialects.let_the_loop_run_if_bridged):
        return call_with(database, fn, *args, **kwargs)


async def _release(database):
    """Give the task's connection back to the pool, unless the caller holds a transaction
    (pwasyncio's aclose() then refuses, and the connection stays with the task)."""
    try:
        await database.aclose()
    except Exception:  # noqa: BLE001 - that refusal; or a dead connection, dropped
        pass


async def _one_read(operation, prepare, *args):
    """An operation that is one read, its statement awaited directly rather than in the
    greenlet bridge (the bridge's switches around it were 10-20 µs of a 10-message
    get_state's 100-160 here); prepare(*args) gives its statements.Read, so validation, SQL
    and result are the sync API's.

    The bridge runs the whole operation instead while the database is not yet known to be
    migrated (that check queries), and after a database error: the read runs once more
    there, and the sync API's retries and error translation decide. It also finishes a row
    holding a large JSON value, which is decoded in pieces with the loop running between.
    """
    database = await _database()
    if not known_at_head(database):
        return await _run(operation, *args)
    read = call_with(database, prepare, *args)
    try:
        cursor = await database.aexecute_sql(*read.statement.bound(read.values))
    except Exception as exc:  # noqa: BLE001 - database errors go to the bridged operation
        if not execution.is_database_error(exc):
            raise
        cursor = None
    finally:
        await _release(database)
    if cursor is None:
        return await _run(operation, *args)
    rows = cursor.fetchall()
    if any(map(read.statement.dialect.is_large_json, itertools.chain.from_iterable(rows))):
        return await _run(read.result, rows)
    return call_with(database, read.result, rows)


async def get_state(session_id):
    """state.get_state, awaited (one read: see _one_read)."""
    return await _one_read(state.get_state, state.get_state_read, session_id)


async def _one_write(operation, prepare, *args, **kwargs):
    """An operation that is fixed statements in one transaction: prepare(*args, **kwargs)
    gives its statements.Write (validation, encoding and the schema check, in the bridge,
    where a large value lets the loop run), then its statements are awaited directly (each
    one's trip through the bridge was 5-10 µs here, a tenth of a create's own work), all on
    one connection.

    A failure is what the sync API's execution.write makes of it: a taken id raises at once
    (AlreadyExists...); contention, no connection to be had, and a connection that died
    before its COMMIT hand the call to the bridged operation, whose retries decide; a
    connection lost during the COMMIT is ConnectionLost; any other database error is
    translated. Inside the caller's transaction, the bridge runs it all.
    """
    database = await _database()
    if database.in_transaction():
        return await _run(operation, *args, **kwargs)
    try:
        write = await database.run(_bridged, database, prepare, *args, **kwargs)
        written = await _write_directly(database, write)
    finally:
        await _release(database)
    return write.result() if written else await _run(operation, *args, **kwargs)


async def _write_directly(database, write):
    """Run a Write's statements in one transaction on the task's connection; True once
    committed, False if the bridged operation should run instead (nothing was written)."""
    dialect = dialects.of(database)
    try:
        connection = await database.aconnect()
    except Exception as exc:  # noqa: BLE001 - the bridged operation opens it with retries
        if not execution.is_database_error(exc):
            raise
        return False
    step, committing = None, False
    try:
        await database.aexecute_on(connection, dialect.write_begin)
        for step in write.steps:
            await database.aexecute_on(connection, step.sql, step.params)
        step, committing = None, True
        await database.aexecute_on(connection, "COMMIT")
        return True
    except Exception as exc:  # noqa: BLE001 - sorted below, as execution.write sorts them
        await _rollback_quietly(database, connection)  # a no-op after a COMMIT that applied
        if not execution.is_database_error(exc):
            raise
        if isinstance(exc, pw.IntegrityError) and step is not None:
            raise step.on_conflict(exc) from exc  # as Step.run raises it
        execution.may_run_again(dialect, exc, in_doubt=committing)  # or raises
        return False


async def _rollback_quietly(database, connection):
    try:
        await database.aexecute_on(connection, "ROLLBACK")
    except Exception:  # noqa: BLE001 - no transaction left, or a dead connection
        pass


async def create_session(mode, *, name=None, user_id=None, meta=None, ttl=None,
                         conversation_history=None, context_variables=None, plan_data=None,
                         session_id=None):
    """lifecycle.create_session, awaited (one transaction: see _one_write)."""
    return await _one_write(
        lifecycle.create_session, lifecycle.create_session_write, mode, name=name,
        user_id=user_id, meta=meta, ttl=ttl, conversation_history=conversation_history,
        context_variables=context_variables, plan_data=plan_data, session_id=session_id)


def _awaitable(operation):
    @functools.wraps(operation)
    async def coroutine(*args, **kwargs):
        return await _run(operation, *args, **kwargs)
    return coroutine


async def modify_state(state_id, fn, *, attempts=state.MODIFY_ATTEMPTS):
    """state.modify_state, awaited; `fn` may be a plain function or a coroutine function.

    fn runs outside any transaction and lock; the task keeps its pooled connection meanwhile
    (giving it back and taking one again per attempt made racing tasks slower on aiomysql's
    pool than the conflicts themselves). Many slow fns at once need a larger pool:
    ``connect(url, pool_size=N)``.
    """
    await _database()
    bridge = importlib.import_module("playhouse.pwasyncio")

    def call(current):
        result = fn(current)
        return bridge.await_(result) if inspect.isawaitable(result) else result

    return await _run(state.modify_state, state_id, call if callable(fn) else fn,
                      attempts=attempts)


async def migrate(database=None):
    """migrate(), awaited: applies every pending migration."""
    return await _on_sync_database(_migrate, database)


async def rollback(database=None, steps=1):
    """rollback(), awaited."""
    return await _on_sync_database(_rollback, database, steps=steps)


async def migration_status(database=None):
    """migration_status(), awaited."""
    return await _on_sync_database(_migration_status, database)


async def _on_sync_database(operation, database, **kwargs):
    """Run a migration operation on a sync database of the same URL, in a worker thread.

    peewee-migrate writes aware datetimes to its history table's plain TIMESTAMP column,
    which asyncpg refuses; migrations are rare, so they take the sync driver rather than a
    patched copy of peewee-migrate. The loop is never blocked meanwhile.
    """
    database = database or await _database()
    url = _URLS[database]

    def run():
        sync = connecting.open_database(url)
        try:
            return operation(sync, **kwargs)
        finally:
            sync.close()

    try:
        return await asyncio.to_thread(run)
    finally:
        forget_check(database)


update_state = _awaitable(state.update_state)
append_messages = _awaitable(state.append_messages)
recent_messages = _awaitable(state.recent_messages)
pop_message = _awaitable(state.pop_message)
clear_messages = _awaitable(state.clear_messages)
suspend = _awaitable(lifecycle.suspend)
resume = _awaitable(lifecycle.resume)
complete = _awaitable(lifecycle.complete)
expire = _awaitable(lifecycle.expire)
expire_due = _awaitable(lifecycle.expire_due)
purge = _awaitable(lifecycle.purge)
delete_session = _awaitable(lifecycle.delete_session)
list_sessions = _awaitable(listing.list_sessions)
export_session = _awaitable(transfer.export_session)
import_session = _awaitable(transfer.import_session)

__all__ = ["connect", "close", "migrate", "rollback", "migration_status", "update_state",
           "create_session", "get_state", "append_messages", "recent_messages", "pop_message",
           "clear_messages", "modify_state",
           "suspend", "resume", "complete", "expire", "expire_due", "purge", "delete_session",
           "list_sessions", "export_session", "import_session"]
