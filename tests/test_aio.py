"""sessionstate.aio: the same API awaited, many tasks on one loop, processes, a free loop.

The behaviour suite (lifecycle, update_state, validation, round trips) already runs on the
async API through the `api` fixture; these are what only the async API has to prove.
"""

import asyncio
import inspect
import json
import multiprocessing
import sys
import time

import pytest

import sessionstate
from sessionstate import aio, dialects

SAME_AS_SYNC = [name for name in aio.__all__ if name not in ("connect", "close")]


def run(coroutine):
    return asyncio.run(coroutine)


async def connected(url):
    await aio.connect(url)
    await aio.migrate()


def test_every_public_function_has_its_coroutine_with_the_same_arguments():
    for name in SAME_AS_SYNC:
        sync, coroutine = getattr(sessionstate, name), getattr(aio, name)
        assert inspect.iscoroutinefunction(coroutine), name
        assert inspect.signature(coroutine) == inspect.signature(sync), name
    public = {name for name in sessionstate.__all__ if callable(getattr(sessionstate, name))
              and getattr(sessionstate, name).__module__ != "sessionstate.errors"}
    assert public - {"Session", "SessionState", "get_database"} <= set(aio.__all__)


def test_a_missing_async_driver_names_the_extra(monkeypatch, tmp_path):
    from sessionstate import dialects

    monkeypatch.setattr(dialects.SqliteDialect, "async_driver", "no_such_async_driver")
    with pytest.raises(sessionstate.ConfigurationError, match=r"sessionstate\[async\]"):
        run(aio.connect("sqlite:///%s" % (tmp_path / "x.db")))


def test_an_unreachable_server_is_database_unavailable():
    async def attempt():
        await aio.connect("postgresql://postgres:hunter22@127.0.0.1:1/none")

    with pytest.raises(sessionstate.DatabaseUnavailable) as error:
        run(attempt())
    assert "hunter22" not in str(error.value)


def test_200_concurrent_appends_on_one_state_keep_each_once(migrated, url):
    async def scenario():
        await connected(url)
        state = await aio.create_session("copilot")
        versions = await asyncio.gather(*[aio.append_messages(state.id, [{"task": n}])
                                          for n in range(200)])
        history = (await aio.get_state(state.session_id)).conversation_history
        await aio.close()
        return versions, history

    versions, history = run(scenario())
    assert sorted(item["task"] for item in history) == list(range(200))
    assert sorted(versions) == list(range(2, 202))  # each append its own version


class _CountedBridge:
    """Counts the database's greenlet-bridge runs (db.run) from now on."""

    def __init__(self, database, monkeypatch):
        self.runs = 0
        bridge = database.run

        async def counted(*args, **kwargs):
            self.runs += 1
            return await bridge(*args, **kwargs)

        monkeypatch.setattr(database, "run", counted)


def test_get_state_awaits_its_statement_without_the_bridge(migrated, url, monkeypatch):
    """Once the schema is known to be at head, aio.get_state awaits its one statement
    directly; it returns what the sync API returns, and raises what it raises."""
    state = sessionstate.create_session("copilot", context_variables={"k": [1, 2.5, None]})

    async def scenario():
        await connected(url)
        first = await aio.get_state(state.session_id)  # checks the schema, in the bridge
        bridge = _CountedBridge(aio._current, monkeypatch)
        again = await aio.get_state(state.session_id)
        with pytest.raises(sessionstate.SessionNotFound, match="no session with id 'nope'"):
            await aio.get_state("nope")
        with pytest.raises(sessionstate.InvalidStateData, match="session_id"):
            await aio.get_state("")
        await aio.close()
        return first, again, bridge.runs

    first, again, runs = run(scenario())
    assert runs == 0
    expected = sessionstate.get_state(state.session_id).to_dict()
    assert first.to_dict() == again.to_dict() == expected
    assert again.stored and again.dirty_fields == []


def test_get_state_takes_the_bridge_after_a_database_error(migrated, url, monkeypatch):
    """A database error on the direct statement hands the call to the bridged operation,
    whose retries and error translation then decide, as in the sync API."""
    import peewee

    state = sessionstate.create_session("copilot")

    async def scenario():
        await connected(url)
        await aio.get_state(state.session_id)
        database = aio._current
        bridge = _CountedBridge(database, monkeypatch)
        statement = database.aexecute_sql
        failures = []

        async def failing_once(sql, params=None):
            if not failures:
                failures.append(sql)
                raise peewee.OperationalError("disk I/O error")
            return await statement(sql, params)

        monkeypatch.setattr(database, "aexecute_sql", failing_once)
        recovered = await aio.get_state(state.session_id)
        runs_then = bridge.runs

        async def failing(sql, params=None):
            raise peewee.OperationalError("disk I/O error")

        monkeypatch.setattr(database, "aexecute_sql", failing)
        with pytest.raises(sessionstate.errors.DatabaseError, match="disk I/O error") as error:
            await aio.get_state(state.session_id)
        await aio.close()
        return recovered, runs_then, len(failures), error.value

    recovered, runs, failures, error = run(scenario())
    assert recovered.id == state.id and failures == 1 and runs == 1
    assert isinstance(error.__cause__, peewee.OperationalError)


def test_get_state_decodes_a_large_history_in_the_bridge(migrated, url, monkeypatch):
    """A row holding JSON larger than LARGE_JSON is finished in the bridge, where its decoding
    lets the loop run between pieces (outside it, that pause could not be awaited)."""
    monkeypatch.setattr(dialects.AsyncMixin, "LARGE_JSON", 200)
    history = [{"role": "user", "content": "message %d" % n} for n in range(50)]
    state = sessionstate.create_session("copilot", conversation_history=history)

    async def scenario():
        await connected(url)
        await aio.get_state(state.session_id)
        bridge = _CountedBridge(aio._current, monkeypatch)
        loaded = await aio.get_state(state.session_id)
        await aio.close()
        return loaded, bridge.runs

    loaded, runs = run(scenario())
    assert loaded.conversation_history == history and runs == 1


def _rows_of_session(session_id):
    """[sessions rows, session_states rows] with that session id, read by the sync API."""
    from sessionstate import Session, SessionState

    return [Session.select().where(Session.id == session_id).count(),
            SessionState.select().where(SessionState.session == session_id).count()]


def test_create_session_awaits_its_statements_without_the_bridge(migrated, url, monkeypatch):
    """The bridge only prepares a create (validation, encoding); its INSERTs are awaited
    directly, and it returns and raises what the sync API does."""
    async def scenario():
        await connected(url)
        await aio.create_session("copilot")  # checks the schema, in the bridge
        database = aio._current
        bridge = _CountedBridge(database, monkeypatch)
        in_bridge = []  # statements run from sync code, in the bridge
        execute_sql = database.execute_sql
        monkeypatch.setattr(database, "execute_sql",
                            lambda sql, params=None: in_bridge.append(sql) or execute_sql(
                                sql, params))
        state = await aio.create_session("copilot", name="n", meta={"k": [1, 2.5]},
                                         context_variables={"a": None}, session_id="s-direct")
        runs, bridged = bridge.runs, len(in_bridge)
        with pytest.raises(sessionstate.InvalidStateData, match="mode"):
            await aio.create_session("")
        runs_refused = bridge.runs - runs
        with pytest.raises(sessionstate.AlreadyExists, match="s-direct"):
            await aio.create_session("copilot", session_id="s-direct")
        bridged = len(in_bridge)  # none: the taken id is reported at once, not tried again
        await aio.close()
        return state, runs, bridged, runs_refused

    state, runs, bridged, runs_refused = run(scenario())
    assert runs == 1 and bridged == 0 and runs_refused == 1
    assert state.stored and state.version == 1 and state.session_id == "s-direct"
    assert state.to_dict() == sessionstate.get_state("s-direct").to_dict()
    assert _rows_of_session("s-direct") == [1, 1]


def _failing_statement(database, monkeypatch, fails):
    """Make the direct path's statements raise fails(sql) (an exception, or None to run)."""
    statement = database.aexecute_on

    async def failing(connection, sql, params=None):
        error = fails(sql)
        if error is not None:
            raise error
        return await statement(connection, sql, params)

    monkeypatch.setattr(database, "aexecute_on", failing)


def test_create_session_takes_the_bridge_after_contention(migrated, url, monkeypatch):
    """Contention inside the direct transaction rolls it back and hands the call to the
    bridged operation, which retries as the sync API does: the session is written once."""
    import peewee

    async def scenario():
        await connected(url)
        database = aio._current
        transient = dialects.of(database).transient_markers[0]
        failures = []

        def second_insert_fails_once(sql):
            if sql.startswith("INSERT INTO") and "session_states" in sql and not failures:
                failures.append(sql)
                return peewee.OperationalError("%s (simulated)" % transient)
            return None

        _failing_statement(database, monkeypatch, second_insert_fails_once)
        bridge = _CountedBridge(database, monkeypatch)
        state = await aio.create_session("copilot", session_id="s-retried")
        await aio.close()
        return state, len(failures), bridge.runs

    state, failures, runs = run(scenario())
    assert failures == 1 and runs == 2  # the prepare, then the bridged create
    assert state.session_id == "s-retried"
    assert _rows_of_session("s-retried") == [1, 1]


def test_create_session_takes_the_bridge_when_no_connection_is_to_be_had(migrated, url,
                                                                         monkeypatch):
    """A failed checkout hands the call to the bridged operation, which opens its
    connection with the sync API's retries."""
    import peewee

    async def scenario():
        await connected(url)
        database = aio._current
        await aio.create_session("copilot")  # the schema check
        aconnect, failures = database.aconnect, []

        async def refused_once():
            if not failures:
                failures.append(1)
                raise peewee.OperationalError("connection refused (simulated)")
            return await aconnect()

        monkeypatch.setattr(database, "aconnect", refused_once)
        bridge = _CountedBridge(database, monkeypatch)
        state = await aio.create_session("copilot", session_id="s-checkout")
        await aio.close()
        return state, failures, bridge.runs

    state, failures, runs = run(scenario())
    assert failures == [1] and runs == 2 and state.session_id == "s-checkout"
    assert _rows_of_session("s-checkout") == [1, 1]


def test_create_session_translates_other_database_errors_and_writes_nothing(migrated, url,
                                                                           monkeypatch):
    """Any other database error is the sync API's DatabaseError, its cause chained, with
    the transaction rolled back: no half of the create is left behind."""
    import peewee

    async def scenario():
        await connected(url)
        database = aio._current

        def second_insert_fails(sql):
            if sql.startswith("INSERT INTO") and "session_states" in sql:
                return peewee.OperationalError("disk I/O error")
            return None

        with monkeypatch.context() as patched:
            _failing_statement(database, patched, second_insert_fails)
            bridge = _CountedBridge(database, patched)
            with pytest.raises(sessionstate.errors.DatabaseError,
                               match="disk I/O error") as error:
                await aio.create_session("copilot", session_id="s-failed")
        after = await aio.create_session("copilot")
        await aio.close()
        return error.value, bridge.runs, after

    error, runs, after = run(scenario())
    assert isinstance(error.__cause__, peewee.OperationalError) and runs == 1
    assert _rows_of_session("s-failed") == [0, 0]
    assert sessionstate.get_state(after.session_id).id == after.id


def test_a_connection_lost_during_the_create_commit_is_in_doubt(backend, migrated, url,
                                                               monkeypatch):
    """As in the sync API: the outcome of a COMMIT whose connection died is unknown."""
    if backend == "sqlite":
        pytest.skip("SQLite has no connection to lose")

    async def scenario():
        await connected(url)
        database = aio._current
        with monkeypatch.context() as patched:
            _failing_statement(database, patched, lambda sql: ConnectionResetError(
                "Connection reset by peer") if sql == "COMMIT" else None)
            with pytest.raises(sessionstate.ConnectionLost) as error:
                await aio.create_session("copilot", session_id="s-in-doubt")
        after = await aio.create_session("copilot")
        await aio.close()
        return error.value, after

    error, after = run(scenario())
    assert error.in_doubt and isinstance(error.__cause__, ConnectionResetError)
    assert _rows_of_session("s-in-doubt") == [0, 0]  # this COMMIT was never sent
    assert sessionstate.get_state(after.session_id).id == after.id


def test_a_create_whose_connection_is_ended_before_its_commit_is_written_once(
        backend, migrated, url, monkeypatch):
    """The server ends the connection inside the create's transaction: the COMMIT must not
    go to another connection (where it would commit nothing and report success); the call
    is handed to the bridged operation, which writes the session once, whole."""
    if backend != "postgresql":
        pytest.skip("PostgreSQL: asyncpg sees an ended connection at once")
    ended = []

    async def scenario():
        await connected(url)
        database = aio._current
        statement = database.aexecute_on

        async def end_before_commit(connection, sql, params=None):
            if sql == "COMMIT" and not ended:
                ended.append(connection.conn.get_server_pid())
                sessionstate.get_database().execute_sql(
                    "SELECT pg_terminate_backend(%s)", (ended[0],))
                await asyncio.sleep(0.2)  # asyncpg sees its socket close meanwhile
            return await statement(connection, sql, params)

        monkeypatch.setattr(database, "aexecute_on", end_before_commit)
        state = await aio.create_session("copilot", session_id="s-ended")
        await aio.close()
        return state

    state = run(scenario())
    assert ended and state.session_id == "s-ended"
    assert _rows_of_session("s-ended") == [1, 1]


def test_calls_inside_a_callers_transaction_join_it(migrated, url):
    """A caller's own transaction keeps its connection across aio calls, so their writes
    are rolled back with it; after it, calls release their connection again."""
    class Abandon(Exception):
        pass

    async def scenario():
        database = await aio.connect(url)
        state = await aio.create_session("copilot")
        with pytest.raises(Abandon):
            async with database.atomic():
                await aio.update_state(state.id, 1, current_phase="inside")
                inside = await aio.get_state(state.session_id)
                raise Abandon()
        after = await aio.get_state(state.session_id)
        held = database.in_transaction()
        await aio.close()
        return inside, after, held

    inside, after, held = run(scenario())
    assert (inside.current_phase, inside.version) == ("inside", 2)
    assert (after.current_phase, after.version) == ("init", 1)
    assert not held


def test_sync_and_async_callers_share_one_database_at_once(migrated, url):
    state = sessionstate.create_session("copilot", context_variables={"n": 0})

    def increment(current):
        return {"context_variables": {"n": current.context_variables["n"] + 1}}

    async def scenario():
        await connected(url)
        sync_side = asyncio.to_thread(lambda: [sessionstate.modify_state(state.id, increment)
                                               for _ in range(20)])
        async_side = [aio.modify_state(state.id, increment) for _ in range(20)]
        await asyncio.gather(sync_side, *async_side)
        await aio.close()

    run(scenario())
    final = sessionstate.get_state(state.session_id)
    assert final.context_variables == {"n": 40} and final.version == 41


def _modify_worker(url, state_id, tasks, increments, start):
    async def one_task():
        async def increment(current):
            await asyncio.sleep(0)  # a coroutine fn, awaited between read and write
            return {"context_variables": {"n": current.context_variables["n"] + 1}}
        for _ in range(increments):
            await aio.modify_state(state_id, increment, attempts=1000)

    async def main():
        await aio.connect(url)
        start.wait(60)
        await asyncio.gather(*[one_task() for _ in range(tasks)])
        await aio.close()

    asyncio.run(main())


def test_processes_of_tasks_incrementing_with_modify_state_count_exactly(migrated, url):
    state = sessionstate.create_session("copilot", context_variables={"n": 0})
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(4)
    workers = [context.Process(target=_modify_worker, args=(url, state.id, 25, 4, start))
               for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    final = sessionstate.get_state(state.session_id)
    assert final.context_variables == {"n": 400} and final.version == 401


def _history(messages):
    text = "Lorem ipsum dolor sit amet, consectetur adipiscing elit " * 3
    return [{"role": "user" if n % 2 else "assistant", "content": text, "n": n,
             "score": n / 3} for n in range(messages)]


async def _largest_loop_delay(state, history):
    """Create a session with `history`, save it to `state` and load it while a ticker runs;
    the ticker's longest wait past 5 ms, in ms."""
    delays, done = [], asyncio.Event()

    async def ticker():
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            delays.append(now - last - 0.005)
            last = now

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    created = await aio.create_session("copilot", conversation_history=history)
    version = await aio.update_state(state.id, state.version, conversation_history=history)
    loaded = await aio.get_state(state.session_id)
    done.set()
    await ticking
    assert loaded.version == version and len(loaded.conversation_history) == len(history)
    assert created.version == 1 and created.conversation_history is history
    return max(delays) * 1000


def test_the_loop_stays_responsive_while_5_mb_are_saved_and_loaded(migrated, url, backend):
    history = _history(24_000)
    assert len(json.dumps(history)) > 5_000_000

    async def scenario():
        await connected(url)
        state = await aio.create_session("copilot")
        worst = []
        for _ in range(3):  # the best of three: a busy machine can stall any one run
            worst.append(await _largest_loop_delay(state, history))
            state = await aio.get_state(state.session_id)
            if worst[-1] < 50:
                break
        await aio.close()
        return worst

    delays = run(scenario())
    print("largest loop delay on %s: %s ms" % (backend, ", ".join("%.1f" % d for d in delays)),
          file=sys.stderr)
    assert min(delays) < 50, delays


def test_after_the_server_ends_its_connections_the_next_calls_work(backend, url, migrated):
    """The resilience rules hold on the async API too: dead connections are replaced."""
    if backend == "sqlite":
        pytest.skip("SQLite has no connection to lose")
    from test_resilience import end_library_connections

    async def scenario():
        await connected(url)
        states = [await aio.create_session("copilot") for _ in range(3)]
        await asyncio.gather(*[aio.get_state(state.session_id) for state in states])
        await asyncio.to_thread(end_library_connections, url, backend)
        writes = await asyncio.gather(*[aio.update_state(state.id, 1, current_step=2)
                                        for state in states])  # writes first: not in doubt
        await asyncio.to_thread(end_library_connections, url, backend)
        reads = await asyncio.gather(*[aio.get_state(state.session_id) for state in states])
        await aio.close()
        return reads, writes

    reads, writes = run(scenario())
    assert writes == [2, 2, 2] and [state.current_step for state in reads] == [2, 2, 2]


def test_a_stopped_server_is_database_unavailable_then_calls_work_again():
    from instances import PostgresInstance
    from conftest import UNDER_CI

    if not PostgresInstance.is_available():
        if UNDER_CI:
            pytest.fail("PostgreSQL binaries missing under CI")
        pytest.skip(PostgresInstance.unavailable_reason())

    async def scenario(server):
        await connected(server.url)
        state = await aio.create_session("copilot")
        await asyncio.to_thread(server.stop)
        with pytest.raises(sessionstate.DatabaseUnavailable):
            await aio.get_state(state.session_id)
        with pytest.raises(sessionstate.DatabaseUnavailable):
            await aio.update_state(state.id, 1, current_step=1)
        await asyncio.to_thread(server.start)
        version = await aio.update_state(state.id, 1, current_step=1)
        await aio.close()
        return version

    with PostgresInstance() as server:
        assert run(scenario(server)) == 2


def test_a_large_value_with_quotes_percents_and_backslashes_round_trips(migrated, url):
    """Large values take their own path on every backend (MariaDB: literals in the SQL, no
    parameters; all: decoded in pieces); what comes back is what went in."""
    tricky = "it's \"quoted\" \\ back\\slashed %s %% %(x)s ; -- DROP TABLE x; café 😀 \u2028"
    history = [{"role": "user", "content": tricky * (1 + n % 4), "n": n, "k": [{"a": "}, {"}]}
               for n in range(12_000)]
    assert len(json.dumps(history)) > dialects.AsyncMixin.LARGE_JSON

    async def scenario():
        await connected(url)
        state = await aio.create_session("copilot", name=tricky[:200])
        version = await aio.update_state(state.id, state.version, conversation_history=history,
                                         current_phase="it's %s", current_step=3)
        loaded = await aio.get_state(state.session_id)
        await aio.close()
        return version, loaded

    version, loaded = run(scenario())
    assert (version, loaded.version, loaded.current_step) == (2, 2, 3)
    assert loaded.current_phase == "it's %s"
    assert loaded.conversation_history == history
    assert sessionstate.get_state(loaded.session_id).conversation_history == history
