"""Profile one sessionstate hot path with cProfile, on a fresh database.

    python -m bench.profile W2 --size 10000 [--calls 20] [--sort tottime] [--top 25]
    python -m bench.profile A3 --size 10 [--backend postgresql] [--breakdown]

Workloads: W1 (create_session), W2 (update_state, whole state), W3 (get_state),
W4 (append_messages), W5 (list_sessions over --sessions rows), W6 (purge 1,000
sessions among --sessions): the sync API, on a SQLite file.

A1-A4 are W1-W4 through sessionstate.aio, on one event loop, on --backend (SQLite by default;
postgresql and mysql use a database of their own on the bench's servers, dropped after).
Before the profile they print the mean time per call, without the profiler, of aio, of the
async baseline (bench/abaseline.py) and of the sync API. --breakdown adds what each layer
under aio costs on its own (see breakdown()), and --no-profile skips the profile. Under
greenlets cProfile counts a frame resumed after a switch as a new call: ncalls of the
functions that await (greenlet_spawn, aio._run, ...) are inflated; tottime stays right.

--patch NAME,... first applies, in this process only, experiments that stand in for changes
suggested to sessionstate.aio or playhouse.pwasyncio (see PATCHES): what a change would gain,
measured before anyone makes it. Nothing of sessionstate is edited.
"""

import argparse
import asyncio
import cProfile
import datetime as dt
import gc
import pstats
import shutil
import tempfile
import time

import sessionstate as ss

from . import data
from .baseline import open_baseline

UTC = dt.timezone.utc
ASYNC = ("A1", "A2", "A3", "A4")
ROUNDS = 3


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("workload", choices=("W1", "W2", "W3", "W4", "W5", "W6") + ASYNC)
    parser.add_argument("--size", type=int, default=10, help="history length (W2-W4, A2-A4)")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--sessions", type=int, default=100_000, help="sessions for W5 and W6")
    parser.add_argument("--backend", default="sqlite",
                        help="A1-A4: sqlite (default), postgresql or mysql")
    parser.add_argument("--breakdown", action="store_true",
                        help="A1-A4: time the layers under aio one by one")
    parser.add_argument("--no-profile", action="store_true", help="A1-A4: timings only")
    parser.add_argument("--patch", default="",
                        help="A1-A4: experiments to apply first, comma-separated: %s"
                        % ", ".join(PATCHES))
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    if args.workload in ASYNC:
        for name in filter(None, (n.strip() for n in args.patch.split(","))):
            if name not in PATCHES:
                parser.error("unknown patch %r; known: %s" % (name, ", ".join(PATCHES)))
            PATCHES[name][1]()
            print("patched: %s: %s" % (name, PATCHES[name][0]))
        return profile_async(args)
    if args.backend != "sqlite":
        parser.error("the sync workloads are profiled on SQLite only")

    folder = tempfile.mkdtemp(prefix="sessionstate-profile-")
    url = "sqlite:///%s/profile.db" % folder
    try:
        database = ss.connect(url)
        ss.migrate(database)
        base = open_baseline("sqlite", url)
        history = data.history(args.size)
        context, plan = data.context_variables(), data.plan_data()
        session_id, state_id = base.create_session("copilot", "p", "u", None, history, context)
        version = [1]
        now = dt.datetime.now(UTC)

        if args.workload == "W1":
            def call(i):
                ss.create_session("copilot", name="p", user_id="u", meta={"a": 1},
                                  conversation_history=data.history(2, seed=1),
                                  context_variables=context)
        elif args.workload == "W2":
            def call(i):
                version[0] = ss.update_state(state_id, version[0], conversation_history=history,
                                             context_variables=context, plan_data=plan,
                                             current_phase="execute", current_step=i)
        elif args.workload == "W3":
            def call(i):
                ss.get_state(session_id)
        elif args.workload == "W4":
            message = data.one_message(1)

            def call(i):
                ss.append_messages(state_id, [message])
        elif args.workload == "W5":
            base.bulk_load(*data.listing_rows(args.sessions, now))

            def call(i):
                ss.list_sessions(status="active", limit=50)
        else:
            # As in the bench: the kept sessions once, the doomed ones back before each purge.
            kept, doomed = data.purge_rows(args.sessions, 1_000, now)
            base.bulk_load(*kept)

            def call(i):
                base.bulk_load(*doomed)
                assert ss.purge(now - dt.timedelta(days=30)) == 1_000

        call(-1)
        profiler, t0 = _start_profile()
        for i in range(args.calls):
            call(i)
        _report_profile(args, profiler, t0)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _start_profile():
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    return profiler, t0


def _report_profile(args, profiler, t0):
    """Stop `profiler`; print the time per call and its top functions."""
    profiler.disable()
    elapsed = time.perf_counter() - t0
    print("%s size %d: %d calls, %.3f ms per call under the profiler"
          % (args.workload, args.size, args.calls, 1000 * elapsed / args.calls))
    pstats.Stats(profiler).strip_dirs().sort_stats(args.sort).print_stats(args.top)


# -- the async workloads -----------------------------------------------------------------------

def profile_async(args):
    from .run import Databases

    class CoreOnly(Databases):
        NAMES = ("core",)

    dbs = CoreOnly(args.backend)
    try:
        url = dbs.urls["core"]
        ss.connect(url)
        asyncio.run(_profile_async(args, url))
    finally:
        ss.get_database().close()
        dbs.drop()


class Calls:
    """The workload's call three ways: aio, the async baseline, the sync API."""

    def __init__(self, workload, size, base):
        self.workload, self.size = workload, size
        self.base = base
        self.history = data.history(size)
        self.context, self.plan = data.context_variables(), data.plan_data()
        self.message = data.one_message(1)
        self.versions = {}

    async def setup(self):
        from sessionstate import aio

        self.aio = aio
        history = self.history if self.workload != "A1" else data.history(2, seed=1)
        state = await aio.create_session("copilot", name="p", user_id="u",
                                         conversation_history=history,
                                         context_variables=self.context)
        sync_state = ss.create_session("copilot", name="p", user_id="u",
                                       conversation_history=history,
                                       context_variables=self.context)
        self.session = {"aio": state.session_id, "sync": sync_state.session_id}
        self.state = {"aio": state.id, "sync": sync_state.id}
        self.session["base"], self.state["base"] = await self.base.create_session(
            "copilot", "p", "u", None, history, self.context)
        self.versions = {"aio": 1, "sync": 1, "base": 1}

    async def aio_call(self, i):
        aio, w = self.aio, self.workload
        if w == "A1":
            await aio.create_session("copilot", name="p", user_id="u", meta={"a": 1},
                                     conversation_history=self.history,
                                     context_variables=self.context)
        elif w == "A2":
            self.versions["aio"] = await aio.update_state(
                self.state["aio"], self.versions["aio"], conversation_history=self.history,
                context_variables=self.context, plan_data=self.plan, current_phase="execute",
                current_step=i % 1000)
        elif w == "A3":
            await aio.get_state(self.session["aio"])
        else:
            await aio.append_messages(self.state["aio"], [self.message])

    async def base_call(self, i):
        base, w = self.base, self.workload
        if w == "A1":
            await base.create_session("copilot", "p", "u", {"a": 1}, self.history, self.context)
        elif w == "A2":
            self.versions["base"] = await base.save_state(
                self.state["base"], self.versions["base"], self.history, self.context,
                self.plan, "execute", i % 1000)
        elif w == "A3":
            await base.get_state(self.session["base"])
        else:
            await base.append_message(self.state["base"], self.message)

    def sync_call(self, i):
        w = self.workload
        if w == "A1":
            ss.create_session("copilot", name="p", user_id="u", meta={"a": 1},
                              conversation_history=self.history, context_variables=self.context)
        elif w == "A2":
            self.versions["sync"] = ss.update_state(
                self.state["sync"], self.versions["sync"], conversation_history=self.history,
                context_variables=self.context, plan_data=self.plan, current_phase="execute",
                current_step=i % 1000)
        elif w == "A3":
            ss.get_state(self.session["sync"])
        else:
            ss.append_messages(self.state["sync"], [self.message])


async def _mean_ms(call, calls):
    for i in range(3):
        await call(-1 - i)
    gc.collect()
    t0 = time.perf_counter()
    for i in range(calls):
        await call(i)
    return 1000 * (time.perf_counter() - t0) / calls


async def _profile_async(args, url):
    from sessionstate import aio

    from .abaseline import open_async_baseline

    await aio.connect(url)
    base = await open_async_baseline(args.backend, url)
    try:
        calls = Calls(args.workload, args.size, base)
        await calls.setup()

        async def sync_call(i):
            calls.sync_call(i)

        timings = {}
        for _ in range(2):  # alternate, keep the better of two
            for name, call in (("aio", calls.aio_call), ("async baseline", calls.base_call),
                               ("sync API", sync_call)):
                ms = await _mean_ms(call, args.calls)
                timings[name] = min(ms, timings.get(name, ms))
        print("%s size %d on %s, %d calls, mean ms per call (no profiler): %s; aio/baseline %.2f"
              % (args.workload, args.size, args.backend, args.calls,
                 ", ".join("%s %.3f" % item for item in timings.items()),
                 timings["aio"] / timings["async baseline"]))
        if args.breakdown:
            await breakdown(args, calls, base)
        if args.no_profile:
            return
        profiler, t0 = _start_profile()
        for i in range(args.calls):
            await calls.aio_call(i)
        _report_profile(args, profiler, t0)
    finally:
        await base.close()
        await aio.close()


async def breakdown(args, calls, base):
    """The layers under an aio call, each timed alone (mean µs per call, no profiler):

    bridge       ``await db.run(f)`` of a function that does nothing: a greenlet, its switch
    pool         ``aconnect()`` + ``aclose()``: a connection from the pool and back
    bridge+pool  ``db.run(db.connect)`` then ``aclose()``, as aio._run does around each call
    statement    the workload's main statement through pwasyncio's connection wrapper, in the
                 bridge (``db.execute_sql(...).fetchall()``), the connection held throughout
    driver-as-pwasyncio  (SQLite) the statement on the bare aiosqlite connection the way
                 pwasyncio runs it: execute, fetchall, close (three hops to its thread)
    bare         the same statement on the bare driver as the baseline runs it
    sync         the same statement on the sync API's peewee database

    Also counted: event-loop iterations per call of aio and of the baseline (each is an
    epoll wait, and a wake-up when another thread or the server has to answer).
    """
    from sessionstate import aio
    from sessionstate.models import call_with

    database = aio._current
    sql, params, family = _main_statement(args, calls)

    def noop():
        return None

    async def bridge(i):
        await database.run(noop)

    async def pool(i):
        await database.aconnect()
        await database.aclose()

    async def bridge_pool(i):
        try:
            await database.run(call_with, database, database.connect)
        finally:
            await database.aclose()

    def run_statement():
        return database.execute_sql(sql, params).fetchall()

    async def statement(i):
        await database.run(run_statement)

    bare = _bare_statement(family, base, sql, params)

    async def as_pwasyncio(i):
        cursor = await base.conn.execute(sql, params)
        await cursor.fetchall()
        await cursor.close()

    sync_database = ss.get_database()

    async def sync(i):
        sync_database.execute_sql(sql, params).fetchall()

    hops = _count_hops(family)
    layers = [("bridge", bridge), ("pool", pool), ("bridge+pool", bridge_pool),
              ("statement", statement)]
    if family == "sqlite":
        layers.append(("driver-as-pwasyncio", as_pwasyncio))
    layers += [("bare", bare), ("sync", sync)]
    results, hop_counts = {}, {}
    for _ in range(ROUNDS):  # interleaved rounds, the best of each kept: other load is noise
        for name, call in layers:
            if name == "statement":
                await database.aconnect()  # held throughout, as within one aio call
            with hops:
                ms = await _mean_ms(call, args.calls)
            hop_counts[name] = hops.count / (args.calls + 3)
            if name == "statement":
                await database.aclose()
            results[name] = min(ms, results.get(name, ms))
    print("breakdown (mean µs per call, best of %d rounds): %s" % (ROUNDS, ", ".join(
        "%s %.1f" % (name, 1000 * ms) for name, ms in results.items())))
    loop = asyncio.get_running_loop()
    per_call = {}
    for name, call in (("aio", calls.aio_call), ("baseline", calls.base_call)):
        with hops:
            iterations = await _loop_iterations(loop, call, args.calls)
        per_call[name] = (iterations, hops.count / args.calls)
    print("  event-loop iterations per call: aio %.1f, baseline %.1f"
          % (per_call["aio"][0], per_call["baseline"][0]))
    if family == "sqlite":
        print("  aiosqlite thread hops per call: aio %.1f, baseline %.1f; per statement: "
              "through pwasyncio %.1f, bare %.1f"
              % (per_call["aio"][1], per_call["baseline"][1], hop_counts["statement"],
                 hop_counts["bare"]))
    print("  statement: %r" % (sql[:110] + ("..." if len(sql) > 110 else ""),))


async def _loop_iterations(loop, call, calls):
    """Mean event-loop iterations (_run_once) per call."""
    original = loop._run_once
    count = [0]

    def counting():
        count[0] += 1
        original()

    loop._run_once = counting
    try:
        for i in range(calls):
            await call(i)
    finally:
        del loop._run_once
    return count[0] / calls


def _main_statement(args, calls):
    """(sql, params, family) of the workload's main statement, in the sync API's format."""
    family = args.backend
    mark = "?" if family == "sqlite" else "%s"
    if args.workload in ("A3", "A1"):
        from .abaseline import GET_STATE

        return GET_STATE.replace("?", mark), [calls.session["base"]], family
    if args.workload == "A2":
        return ("UPDATE session_states SET current_step = current_step WHERE id = " + mark,
                [calls.state["base"]], family)
    return ("SELECT version FROM session_states WHERE id = " + mark, [calls.state["base"]],
            family)


def _bare_statement(family, base, sql, params):
    if family == "sqlite":
        async def bare(i):
            await base.conn.execute_fetchall(sql, params)
    elif family == "postgresql":
        from .abaseline import _dollars

        dollar_sql = _dollars(sql.replace("%s", "?"))

        async def bare(i):
            await base.conn.fetch(dollar_sql, *params)
    else:
        async def bare(i):
            async with base.conn.cursor() as cursor:
                await cursor.execute(sql, params)
                await cursor.fetchall()
    return bare


class _count_hops:
    """Counts calls queued to aiosqlite's worker threads (each is one thread hop)."""

    def __init__(self, family):
        self.count = 0
        self.active = family == "sqlite"

    def __enter__(self):
        self.count = 0
        if self.active:
            import aiosqlite.core as core

            self.original = core.Connection._execute
            counter = self

            async def counting(connection, fn, *args, **kwargs):
                counter.count += 1
                return await counter.original(connection, fn, *args, **kwargs)

            core.Connection._execute = counting
        return self

    def __exit__(self, *exc):
        if self.active:
            import aiosqlite.core as core

            core.Connection._execute = self.original



# -- what-if experiments (--patch) -------------------------------------------------------------
# Each stands in, for this process only, for a change suggested to sessionstate.aio or to
# playhouse.pwasyncio, so its gain can be measured before anyone makes it. They reach into
# private attributes of pwasyncio, aiosqlite and asyncpg (the versions in constraints.txt).

def _patch_keep_connection():
    """sessionstate.aio._run without the per-call aclose(): a task keeps its pooled
    connection between calls; pwasyncio releases it when the task ends."""
    from sessionstate import aio

    async def run_keeping(operation, *args, **kwargs):
        database = aio._current if aio._current is not None else await aio.connect()
        return await database.run(aio.call_with, database, operation, *args, **kwargs)

    aio._run = run_keeping


def _patch_sqlite_pool_1():
    """One aiosqlite connection in sessionstate.aio's SQLite pool (pool_size=1) instead of 10:
    SQLite has one writer anyway, and connections racing for it sleep in the busy handler."""
    from playhouse import pwasyncio

    original = pwasyncio.AsyncSqliteDatabase.__init__

    def init(self, database, **kwargs):
        kwargs["pool_size"] = 1
        original(self, database, **kwargs)

    pwasyncio.AsyncSqliteDatabase.__init__ = init


PATCHES = {
    "keep-connection": ("no aclose() after each aio call (the task keeps its connection)",
                        _patch_keep_connection),
    "sqlite-pool-1": ("one aiosqlite connection in the pool, not ten", _patch_sqlite_pool_1),
}
# Measured here before they were made, and now part of sessionstate.aiodrivers: a SQLite
# statement in one hop, asyncpg's statement cache, asyncpg's pool without its reset query,
# an acquire without wait_for Tasks, JSON as text decoded by sessionstate (bench/README.md).


if __name__ == "__main__":
    main()
