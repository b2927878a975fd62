"""SessionStateSession against the OpenAI Agents SDK's own sessions.

    .venv/bin/python -m bench.agents [--backend sqlite,postgresql] [--repeats N] [--quick]

Two operations, at histories of 10, 1,000 and 10,000 items:

- get_items(limit=20): the tail the Runner reads with SessionSettings(limit=20);
- add_items(one turn): the four items a turn with one tool call stores (user message,
  function_call, function_call_output, assistant message). The history is brought back to
  its size after each call (four pop_item calls, untimed), so every call sees the same size.

On SQLite: sessionstate.openai_agents.SessionStateSession (sessionstate.aio on aiosqlite)
against the SDK's SQLiteSession (sqlite3 in a worker thread, a row per item), each on its own
file. On PostgreSQL (SESSIONSTATE_BENCH_POSTGRESQL, default postgresql://postgres@127.0.0.1/
test; a database of its own is created and dropped): SessionStateSession (asyncpg) against
the SDK's SQLAlchemySession (SQLAlchemy's asyncio engine on asyncpg, a row per item); it
needs `pip install -c constraints.txt 'sqlalchemy[asyncio]'` and is skipped, with that
command, without it.

Both sides keep one session object (as a server holding it would) and run on one event loop.
Each repeat times a block of calls of each side, alternating which goes first; printed per
row: the p50 and mean of each side and the time ratio sessionstate/SDK (mean time per call;
2.0 means sessionstate takes twice as long), the median of the repeats with their min-max.
The figures go to bench/results/agents-<backend>-<date>.json.
"""

import argparse
import asyncio
import datetime as dt
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sessionstate
from sessionstate import aio
from sessionstate import db as connecting

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SIZES = (10, 1_000, 10_000)
LIMIT = 20
TURN_ITEMS = 4
# Calls per timed block, by operation and history size.
OPS = {"get_items": {10: 200, 1_000: 100, 10_000: 30},
       "add_items": {10: 100, 1_000: 50, 10_000: 15}}
POSTGRESQL_ADMIN = os.environ.get("SESSIONSTATE_BENCH_POSTGRESQL",
                                  "postgresql://postgres@127.0.0.1:5432/test")


# -- the items ------------------------------------------------------------------------------

def turn(n):
    """The four input items of turn n, as the Runner stores them (about 900 bytes of JSON)."""
    call_id = "call_%06d" % n
    return [
        {"role": "user", "content": "Turn %d: what's the weather in Zürich, and should I "
                                    "take an umbrella tomorrow? ☂" % n},
        {"type": "function_call", "id": "fc_%06d" % n, "call_id": call_id,
         "name": "get_weather", "arguments": json.dumps({"city": "Zürich", "days": 2}),
         "status": "completed"},
        {"type": "function_call_output", "call_id": call_id,
         "output": json.dumps({"today": {"temp": 21.5, "sky": "sunny"},
                               "tomorrow": {"temp": 17.0, "sky": "rain", "mm": 6.5}})},
        {"type": "message", "id": "msg_%06d" % n, "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "annotations": [], "logprobs": [],
                      "text": "Today is sunny at 21.5 °C; tomorrow brings 6.5 mm of rain, "
                              "so yes, take an umbrella. (turn %d)" % n}]},
    ]


def history(size):
    items = []
    n = 0
    while len(items) < size:
        items += turn(n)
        n += 1
    return items[:size]


# -- the sides ------------------------------------------------------------------------------

class Side:
    """One implementation: a session object per history size, filled to that size."""

    def __init__(self, name, make):
        self.name = name
        self.make = make  # session_id -> a Session
        self.sessions = {}

    async def fill(self, size):
        session = self.make("bench-%d-%s" % (size, uuid.uuid4().hex[:8]))
        items = history(size)
        for start in range(0, size, 1_000):  # as a long conversation would have grown
            await session.add_items(items[start:start + 1_000])
        assert len(await session.get_items()) == size
        self.sessions[size] = session


async def timed(operation, count, restore=None, warmup=2):
    """Latencies of `count` awaited calls operation(i); restore(i), untimed, after each."""
    for i in range(warmup):
        await operation(-1 - i)
        if restore is not None:
            await restore(-1 - i)
    gc.collect()
    latencies = []
    clock = time.perf_counter
    for i in range(count):
        t0 = clock()
        await operation(i)
        latencies.append(clock() - t0)
        if restore is not None:
            await restore(i)
    return latencies


async def measure(side, operation, size, count):
    session = side.sessions[size]
    if operation == "get_items":
        async def call(i):
            items = await session.get_items(limit=LIMIT)
            assert len(items) == min(LIMIT, size)
        return await timed(call, count)

    async def add(i):
        await session.add_items(turn(100_000 + i))

    async def restore(i):
        for _ in range(TURN_ITEMS):
            await session.pop_item()
    return await timed(add, count, restore)


def stats(latencies):
    latencies = sorted(latencies)
    return {"ops": len(latencies), "mean_ms": 1000 * statistics.fmean(latencies),
            "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p95_ms": 1000 * latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]}


async def compare(ours, theirs, repeats, scale):
    rows = []
    for size in SIZES:
        for side in (ours, theirs):
            await side.fill(size)
        for operation in ("get_items", "add_items"):
            count = max(3, int(OPS[operation][size] * scale))
            runs = []
            for repeat in range(repeats):
                order = (ours, theirs) if repeat % 2 == 0 else (theirs, ours)
                result = {}
                for side in order:
                    result[side.name] = stats(await measure(side, operation, size, count))
                result["ratio"] = result[ours.name]["mean_ms"] / result[theirs.name]["mean_ms"]
                runs.append(result)
            ratios = [run["ratio"] for run in runs]
            rows.append({"operation": operation, "size": size, "runs": runs,
                         "ratio": statistics.median(ratios), "ratio_min": min(ratios),
                         "ratio_max": max(ratios),
                         ours.name: _median_stats(runs, ours.name),
                         theirs.name: _median_stats(runs, theirs.name)})
            print_row(rows[-1], ours.name, theirs.name)
    return rows


def _median_stats(runs, name):
    return {key: statistics.median(run[name][key] for run in runs)
            for key in ("mean_ms", "p50_ms", "p95_ms")}


def print_header(backend, ours, theirs):
    print("\n%s: %s vs %s (ms per call; ratio = mean time %s / %s)" % (
        backend, ours, theirs, ours, theirs))
    print("%-22s %7s | %9s %9s | %9s %9s | %7s %15s" % (
        "operation", "items", "ours p50", "ours mean", "SDK p50", "SDK mean", "ratio",
        "(min-max)"))


def print_row(row, ours, theirs):
    name = "get_items(limit=%d)" % LIMIT if row["operation"] == "get_items" else \
        "add_items(1 turn)"
    print("%-22s %7s | %9.3f %9.3f | %9.3f %9.3f | %7.2f %15s" % (
        name, "{:,}".format(row["size"]), row[ours]["p50_ms"], row[ours]["mean_ms"],
        row[theirs]["p50_ms"], row[theirs]["mean_ms"], row["ratio"],
        "(%.2f-%.2f)" % (row["ratio_min"], row["ratio_max"])), flush=True)


# -- the backends ---------------------------------------------------------------------------

async def run_sqlite(folder, repeats, scale):
    from agents.memory import SQLiteSession

    from sessionstate.openai_agents import SessionStateSession

    url = "sqlite:///%s" % (folder / "sessionstate.db")
    sessionstate.migrate(sessionstate.connect(url))
    await aio.connect(url)
    sdk_file = folder / "sdk.db"
    ours = Side("SessionStateSession", lambda session_id: SessionStateSession(session_id))
    opened = []

    def sdk_session(session_id):
        opened.append(SQLiteSession(session_id, str(sdk_file)))
        return opened[-1]

    theirs = Side("SQLiteSession", sdk_session)
    print_header("sqlite", ours.name, theirs.name)
    try:
        return await compare(ours, theirs, repeats, scale)
    finally:
        for session in opened:
            session.close()
        await aio.close()


async def run_postgresql(repeats, scale):
    if importlib.util.find_spec("sqlalchemy") is None:
        print("\npostgresql: skipped, SQLAlchemySession needs SQLAlchemy: "
              "%s -m pip install -c constraints.txt 'sqlalchemy[asyncio]'" % sys.executable)
        return None
    from agents.extensions.memory import SQLAlchemySession

    from sessionstate.openai_agents import SessionStateSession

    name = "sessionstate_bench_agents_%s" % uuid.uuid4().hex[:10]
    base = POSTGRESQL_ADMIN.rpartition("/")[0]
    url = "%s/%s" % (base, name)
    admin = connecting.open_database(POSTGRESQL_ADMIN)
    with admin.connection_context():
        admin.execute_sql("CREATE DATABASE %s" % name)
    engines = []
    try:
        sessionstate.migrate(sessionstate.connect(url))
        sessionstate.get_database().close()
        await aio.connect(url)
        sqlalchemy_url = "postgresql+asyncpg://" + url.split("://", 1)[1]
        ours = Side("SessionStateSession", lambda session_id: SessionStateSession(session_id))

        def sdk_session(session_id):
            session = SQLAlchemySession.from_url(session_id, url=sqlalchemy_url,
                                                 create_tables=True)
            engines.append(session.engine)
            return session

        theirs = Side("SQLAlchemySession", sdk_session)
        print_header("postgresql", ours.name, theirs.name)
        return await compare(ours, theirs, repeats, scale)
    finally:
        for engine in engines:
            await engine.dispose()
        await aio.close()
        with admin.connection_context():
            admin.execute_sql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)
        admin.close()


def summary(results):
    print("\nratios (sessionstate / SDK, mean time per call; median of the repeats)")
    print("%-12s %-22s %8s %8s %8s" % ("backend", "operation", *("{:,}".format(s)
                                                                  for s in SIZES)))
    for backend, rows in results.items():
        if not rows:
            continue
        for operation in ("get_items", "add_items"):
            ratios = {row["size"]: row["ratio"] for row in rows if row["operation"] == operation}
            label = "get_items(limit=%d)" % LIMIT if operation == "get_items" else \
                "add_items(1 turn)"
            print("%-12s %-22s %8.2f %8.2f %8.2f" % (backend, label,
                                                      *(ratios[s] for s in SIZES)))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.agents", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--backend", default="sqlite,postgresql",
                        help="comma-separated: sqlite, postgresql (default: both)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the calls per block")
    parser.add_argument("--quick", action="store_true", help="--scale 0.2 --repeats 1")
    args = parser.parse_args(argv)
    if args.quick:
        args.scale, args.repeats = 0.2, 1
    backends = [name.strip() for name in args.backend.split(",") if name.strip()]
    unknown = set(backends) - {"sqlite", "postgresql"}
    if unknown:
        parser.error("unknown backend(s): %s" % ", ".join(sorted(unknown)))
    import agents

    agents.set_tracing_disabled(True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="sessionstate-bench-agents-") as folder:
        os.environ["HOME"] = folder  # nothing may touch ~/.sessionstate
        if "sqlite" in backends:
            results["sqlite"] = asyncio.run(run_sqlite(Path(folder), args.repeats, args.scale))
        if "postgresql" in backends:
            results["postgresql"] = asyncio.run(run_postgresql(args.repeats, args.scale))
    summary(results)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    document = {"when": stamp, "python": platform.python_version(),
                "platform": platform.platform(), "sessionstate": sessionstate.__version__,
                "openai_agents": importlib.metadata.version("openai-agents"),
                "repeats": args.repeats, "scale": args.scale, "limit": LIMIT,
                "turn_items": TURN_ITEMS, "results": results}
    for backend in results:
        path = RESULTS_DIR / ("agents-%s-%s.json" % (backend, stamp))
        path.write_text(json.dumps(dict(document, results={backend: results[backend]}),
                                   indent=1))
        print("results: %s" % path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd())
              else path)


if __name__ == "__main__":
    main()
