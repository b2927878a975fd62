"""The async databases aio opens: one driver call per statement, idle connections at hand.

sessionstate.aiodrivers overrides a few hooks of playhouse.pwasyncio and calls one private
function of aiosqlite; the first tests fail loudly, naming what changed, if an upgrade of
either removes them. The rest check the behaviour through aio and the database it returns.
"""

import asyncio
import inspect

import peewee as pw
import pytest

import sessionstate
from sessionstate import aio


def run(coroutine):
    return asyncio.run(coroutine)


def test_the_pwasyncio_hooks_aiodrivers_overrides_are_still_there():
    from playhouse import pwasyncio

    mixin = pwasyncio.AsyncDatabaseMixin
    for name in ("_acquire_conn_async", "_release_conn", "aexecute_sql", "close_pool",
                 "aconnect", "aclose"):
        assert inspect.iscoroutinefunction(getattr(mixin, name, None)), (
            "playhouse.pwasyncio.AsyncDatabaseMixin.%s is gone or changed: "
            "sessionstate.aiodrivers overrides or calls it" % name)
    assert list(inspect.signature(mixin._release_conn).parameters) == ["self", "conn"]
    assert {"rows", "lastrowid", "rowcount", "description"} <= set(
        inspect.signature(pwasyncio.CursorAdapter).parameters)


def test_aiosqlite_still_runs_a_function_on_its_thread_in_one_hop(tmp_path):
    import aiosqlite

    assert inspect.iscoroutinefunction(getattr(aiosqlite.Connection, "_execute", None)), (
        "aiosqlite.Connection._execute is gone: sessionstate.aiodrivers runs each SQLite "
        "statement through it")

    async def scenario():
        async with aiosqlite.connect(str(tmp_path / "x.db")) as connection:
            return await connection._execute(lambda raw: raw.execute("SELECT 41 + 1")
                                             .fetchall(), connection._conn)

    assert run(scenario()) == [(42,)]


async def _database(url):
    database = await aio.connect(url)
    await aio.migrate()
    return database


def test_statements_give_rows_rowcounts_and_peewee_errors(backend, url):
    mark = "?" if backend == "sqlite" else "%s"
    percent = "'%'" if backend == "sqlite" else "'%%'"  # with parameters, %% is a literal %
    concat = "CONCAT(%s, %s)" if backend == "mysql" else "%s || %s"

    async def scenario():
        database = await _database(url)
        state = await aio.create_session("copilot")

        def statements():
            fifty = database.execute_sql("SELECT " + concat % (mark, percent),
                                         ("50",)).fetchall()
            update = "UPDATE session_states SET current_step = %s WHERE id = %s" % (mark, mark)
            updated = database.execute_sql(update, (7, state.id)).rowcount
            missed = database.execute_sql(update, (7, "no-such-" + str(state.id))).rowcount
            rows = database.execute_sql("SELECT id, current_step FROM session_states").fetchall()
            with pytest.raises(pw.IntegrityError):
                database.execute_sql("INSERT INTO sessions (id, name) VALUES (%s, %s)"
                                     % (mark, mark), (state.session_id, "copilot"))
            return fifty, updated, missed, rows, state.id

        try:
            return await database.run(statements)
        finally:
            await aio.close()

    fifty, updated, missed, rows, state_id = run(scenario())
    assert [tuple(row) for row in fifty] == [("50%",)]
    assert (updated, missed) == (1, 0)
    assert [tuple(row) for row in rows] == [(state_id, 7)]


def test_calls_in_a_row_reuse_one_connection_and_close_gives_it_back(backend, url):
    if backend == "mysql":
        pytest.skip("MariaDB/MySQL keeps no idle connection at hand (see aiodrivers)")

    async def scenario():
        database = await _database(url)
        state = await aio.create_session("copilot")
        for step in range(20):
            await aio.update_state(state.id, step + 1, current_step=step)
            await aio.get_state(state.session_id)
        kept = len(database.idle_connections)
        await aio.close()
        return kept, len(database.idle_connections)

    assert run(scenario()) == (1, 0)


def test_with_more_tasks_than_connections_every_task_gets_through(backend, url):
    """Idle connections are served in turn: with a pool of one, eight tasks each finish
    their calls and none waits out the acquire timeout."""

    async def scenario():
        await aio.connect(url, pool_size=1)
        await aio.migrate()
        states = [await aio.create_session("copilot") for _ in range(8)]
        finished = []

        async def worker(index, state):
            for step in range(10):
                await aio.update_state(state.id, step + 1, current_step=step)
                await asyncio.sleep(0)
            finished.append(index)

        await asyncio.wait_for(asyncio.gather(*[worker(i, s) for i, s in enumerate(states)]),
                               timeout=60)
        final = [await aio.get_state(state.session_id) for state in states]
        await aio.close()
        return finished, final

    finished, final = run(scenario())
    assert sorted(finished) == list(range(8))
    assert [state.version for state in final] == [11] * 8


def test_run_reuses_its_greenlets_and_keeps_pwasyncios_behaviour(backend, url):
    """run() keeps finished greenlets for the next call; values, errors, the caller's
    context variables and cancellation still reach the caller as with greenlet_spawn."""
    import contextvars

    import greenlet
    from playhouse import pwasyncio

    request = contextvars.ContextVar("request")

    async def scenario():
        database = await _database(url)
        state = await aio.create_session("copilot")
        seen = []  # the greenlets themselves: held, so no id is reused by a new one

        def step(value):
            seen.append(greenlet.getcurrent())
            rows = database.execute_sql("SELECT 1").fetchall()
            return value, request.get(None), rows[0][0]

        request.set("first")
        outcomes = [await database.run(step, 1)]
        request.set("second")
        outcomes.append(await database.run(step, 2))
        with pytest.raises(ZeroDivisionError):
            await database.run(lambda: 1 / 0)
        with pytest.raises(pw.IntegrityError):
            await database.run(database.execute_sql,
                               "INSERT INTO sessions (id) VALUES ('%s')" % state.session_id)
        started = asyncio.Event()

        def slow():
            started.set()
            pwasyncio.await_(asyncio.sleep(30))

        task = asyncio.ensure_future(database.run(slow))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        outcomes.append(await database.run(step, 3))  # the bridge still works after it
        gathered = await asyncio.gather(*[database.run(step, n) for n in range(4, 8)])
        await aio.close()
        return outcomes, gathered, seen

    outcomes, gathered, seen = run(scenario())
    assert outcomes == [(1, "first", 1), (2, "second", 1), (3, "second", 1)]
    assert [value for value, _, _ in gathered] == [4, 5, 6, 7]
    assert len(seen) == 7 and len({id(each) for each in seen}) < 7  # reused, not one per call


def test_statements_outside_run_still_name_the_bridge(backend, url):
    from playhouse import pwasyncio

    async def scenario():
        database = await _database(url)
        try:
            with pytest.raises(pwasyncio.MissingGreenletBridge):
                database.execute_sql("SELECT 1")
        finally:
            await aio.close()

    run(scenario())
