"""`make bench`: sessionstate against hand-written SQL on the bare driver, in one run.

    python -m bench.run [--backend sqlite|postgresql|mysql] [--repeats N] [--quick]
                        [--only W2,W3,A2] [--scale F] [--no-chart]

Each workload runs `repeats` times; every repeat times a block of sessionstate calls and a
block of baseline calls on the same schema and the same data (the order alternates between
repeats). W1-W7 are the sync API against the sync driver; A1-A4 and A7 (bench/aio_workloads.py)
are sessionstate.aio against the bare async driver. Printed per workload: ops/s, p50 and p95
latency of both sides, and the time ratio sessionstate/baseline (mean time per operation) as
the median of the repeats with their min-max spread; then the async rows beside the sync ones.
Results go to bench/results/ as JSON (and a PNG chart when matplotlib is there).
"""

import argparse
import asyncio
import datetime as dt
import importlib
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sessionstate as ss

from . import aio_workloads, data, race
from .baseline import open_baseline
from .timing import block_stats, race_stats, sides_in_order, timed_block

UTC = dt.timezone.utc
RESULTS_DIR = Path(__file__).resolve().parent / "results"
SIZES = data.SIZES
ADMIN_URLS = {
    "postgresql": os.environ.get("SESSIONSTATE_BENCH_POSTGRESQL",
                                 "postgresql://postgres@127.0.0.1:5432/test"),
    "mysql": os.environ.get("SESSIONSTATE_BENCH_MYSQL", "mysql://root@127.0.0.1:3306/test"),
}

# Operations per timed block, by workload (and history size). --scale multiplies them.
OPS = {
    "W1": 300,
    "W2": {10: 300, 1_000: 60, 10_000: 10},
    "W3": {10: 300, 1_000: 60, 10_000: 10},
    "W4": {10: 300, 1_000: 100, 10_000: 20},
    "W5": 200,
    "W6": 3,
}
W5_SESSIONS = 100_000
W6_TOTAL, W6_DOOMED = 100_000, 1_000
W7_PROCESSES, W7_SECONDS = 4, 3.0

# The targets: the largest acceptable time ratio sessionstate/baseline. SQLite has them all;
# PostgreSQL those the core issue set for both (W1, W4, W6, W7), its W2, W3 and W5 are
# reported. MariaDB/MySQL have none (ratios reported, and W7's lost updates).
SQLITE_TARGETS = {
    "W1": 2.0,
    "W2 n=10": 2.5, "W2 n=1000": 1.0, "W2 n=10000": 1.0,
    "W3 n=10": 2.5, "W3 n=1000": 1.0, "W3 n=10000": 1.0,
    "W4 n=10": 1.3, "W4 n=1000": 1.3, "W4 n=10000": 1.3,
    "W6": 1.2,
    "W7": 2.0,  # commits/s at least half the baseline's
}
# sessionstate.aio against the bare async driver, on SQLite and PostgreSQL alike: 1.5 where a
# call handles a few messages (A1's 2, 10), 1.1 at 1,000 and 10,000. A7 (the race) has its
# ratio reported, and no update may be lost.
ASYNC_TARGETS = {"A1": 1.5}
for _workload in ("A2", "A3", "A4"):
    ASYNC_TARGETS.update({"%s n=10" % _workload: 1.5, "%s n=1000" % _workload: 1.1,
                          "%s n=10000" % _workload: 1.1})
FAMILY_TARGETS = {
    "sqlite": dict(SQLITE_TARGETS, **ASYNC_TARGETS),
    "postgresql": dict({name: SQLITE_TARGETS[name] for name in SQLITE_TARGETS
                        if name.split()[0] in ("W1", "W4", "W6", "W7")}, **ASYNC_TARGETS),
}
TARGET_FAMILIES = tuple(FAMILY_TARGETS)
W5_TARGET_MS = 1.0  # sessionstate's mean time per call; SQLite only

DESCRIPTIONS = {
    "W1": "create a session with its state",
    "W2": "version-bump save of the whole state",
    "W3": "load a session's state",
    "W4": "append one message",
    "W5": "list the 50 newest active sessions among %d" % W5_SESSIONS,
    "W6": "purge %d expired sessions among %d (cascade)" % (W6_DOOMED, W6_TOTAL),
    "W7": "%d processes racing version-bump saves on one row" % W7_PROCESSES,
    **aio_workloads.DESCRIPTIONS,
}
RACES = ("W7", "A7")  # their rows also report conflicts and lost updates


def log(*parts):
    print(*parts, flush=True)


# -- databases -------------------------------------------------------------------------------

class Databases:
    """Three empty, migrated databases: core (W1-W4, W7), listing (W5) and purge (W6)."""

    NAMES = ("core", "listing", "purge")

    def __init__(self, family):
        self.family = family
        self.tag = "sessionstate_bench_%s" % uuid.uuid4().hex[:8]
        self.tmp = None
        self.urls = {}
        if family == "sqlite":
            self.tmp = tempfile.mkdtemp(prefix="sessionstate-bench-")
            for name in self.NAMES:
                self.urls[name] = "sqlite:///%s" % os.path.join(self.tmp, name + ".db")
        else:
            admin = ADMIN_URLS[family]
            base = admin.rsplit("/", 1)[0]
            for name in self.NAMES:
                self.urls[name] = "%s/%s_%s" % (base, self.tag, name)
            self._admin(["CREATE DATABASE %s_%s" % (self.tag, name) for name in self.NAMES])
        for name in self.NAMES:
            database = ss.connect(self.urls[name])
            ss.migrate(database)
            database.close()

    def _admin(self, statements):
        admin = ADMIN_URLS[self.family]
        if self.family == "postgresql":
            import psycopg

            with psycopg.connect(admin, autocommit=True) as conn:
                for statement in statements:
                    conn.execute(statement)
        else:
            conn = open_baseline("mysql", admin).conn
            try:
                with conn.cursor() as cur:
                    for statement in statements:
                        cur.execute(statement)
            finally:
                conn.close()

    def drop(self):
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        force = " WITH (FORCE)" if self.family == "postgresql" else ""
        self._admin(["DROP DATABASE IF EXISTS %s_%s%s" % (self.tag, name, force)
                     for name in self.NAMES])


# -- timing ----------------------------------------------------------------------------------

class Recorder:
    def __init__(self, family):
        self.family = family
        self.rows = {}

    def add(self, name, side, stats):
        row = self.rows.setdefault(name, {"sessionstate": [], "baseline": []})
        row[side].append(stats)

    def extra(self, name, key, value):
        self.rows.setdefault(name, {"sessionstate": [], "baseline": []})[key] = value

    def summary(self, name):
        row = self.rows[name]
        pairs = list(zip(row["sessionstate"], row["baseline"]))
        ratios = [s["mean_ms"] / b["mean_ms"] for s, b in pairs]
        out = {"workload": name, "repeats": len(pairs), "ratio": statistics.median(ratios),
               "ratio_min": min(ratios), "ratio_max": max(ratios), "ratios": ratios}
        for side in ("sessionstate", "baseline"):
            runs = row[side]
            out[side] = {key: statistics.median(run[key] for run in runs)
                         for key in ("ops_per_s", "mean_ms", "p50_ms", "p95_ms")}
            out[side]["p50_ms_min"] = min(run["p50_ms"] for run in runs)
            out[side]["p50_ms_max"] = max(run["p50_ms"] for run in runs)
            for key in ("conflicts", "lost_updates", "busy"):
                if key in runs[0]:
                    out[side][key] = [run[key] for run in runs]
        return out

    def verdict(self, name, summary):
        """The target's "met"/"NOT met" (and W7's lost updates), or "" without a target."""
        if name == "W5":
            if self.family != "sqlite":
                return ""
            mean = summary["sessionstate"]["mean_ms"]
            return "target <= %.1f ms: %s" % (W5_TARGET_MS, met(mean <= W5_TARGET_MS))
        target = FAMILY_TARGETS.get(self.family, {}).get(name)
        verdict = "" if target is None else "target <= %.1f: %s" % (
            target, met(summary["ratio"] <= target))
        if name in RACES:
            verdict = "; ".join(filter(None, (lost_updates(summary), verdict)))
        return verdict

    def targets_missed(self):
        """Names of the rows that missed a target or lost an update."""
        return [name for name in self.rows
                if any(word in self.verdict(name, self.summary(name))
                       for word in ("NOT met", "LOST"))]

    def print_row(self, name):
        s = self.summary(name)
        a, b = s["sessionstate"], s["baseline"]
        log("  %-11s %-3s %9.1f ops/s p50 %8.3f p95 %8.3f ms | base %9.1f ops/s p50 %8.3f "
            "p95 %8.3f ms | ratio %.2f (%.2f-%.2f) %s"
            % (name, "aio" if is_async(name) else "ss", a["ops_per_s"], a["p50_ms"],
               a["p95_ms"], b["ops_per_s"], b["p50_ms"], b["p95_ms"], s["ratio"],
               s["ratio_min"], s["ratio_max"], self.verdict(name, s)))


def met(ok):
    return "met" if ok else "NOT met"


def is_async(name):
    return name.startswith("A")


def lost_updates(summary):
    lost = sum(summary["sessionstate"]["lost_updates"]) + sum(summary["baseline"]["lost_updates"])
    return "no lost update" if not lost else "LOST UPDATES: %d" % lost


def targets_of(family):
    """The targets that apply on `family`, for the results file."""
    if family not in TARGET_FAMILIES:
        return {}
    targets = dict(FAMILY_TARGETS[family])
    if family == "sqlite":
        targets["W5 ms per call"] = W5_TARGET_MS
    return targets


# -- the workloads ---------------------------------------------------------------------------

def use(url):
    """Bind sessionstate to `url` (a fresh connection) and a baseline connection to it."""
    ss.connect(url)
    ss.list_sessions(limit=1)  # warm: the connection and the schema check
    return url


def run_pair(recorder, name, repeats, ops, make_ops, prepare=None, warmup=2):
    """Each repeat: the sessionstate block and the baseline block, order alternating."""
    for repeat in range(repeats):
        for side in sides_in_order(repeat):
            operation = make_ops[side]
            stats = block_stats(timed_block(operation, ops, warmup=warmup,
                                            prepare=prepare[side] if prepare else None))
            recorder.add(name, side, stats)
    recorder.print_row(name)


def w1(recorder, family, dbs, base, repeats, scale):
    history = data.history(2, seed=1)
    context = data.context_variables()
    meta = {"source": "bench", "tags": ["w1"]}

    def with_ss(i):
        ss.create_session("copilot", name="bench session", user_id="u-1842", meta=meta,
                          conversation_history=history, context_variables=context)

    def with_base(i):
        base.create_session("copilot", "bench session", "u-1842", meta, history, context)

    run_pair(recorder, "W1", repeats, max(3, int(OPS["W1"] * scale)),
             {"sessionstate": with_ss, "baseline": with_base})


def _fresh_state(base, history, side="baseline"):
    """A new session with `history`, written by `side` (each side reads its own text)."""
    if side == "sessionstate":
        state = ss.create_session("copilot", name="bench", user_id="u-1842",
                                  conversation_history=history,
                                  context_variables=data.context_variables())
        return state.session_id, state.id
    return base.create_session("copilot", "bench", "u-1842", None, history,
                               data.context_variables())


def _reset_history(base, side, state_id, history):
    if side == "sessionstate":
        ss.SessionState.update(conversation_history=history).where(
            ss.SessionState.id == state_id).execute()
    else:
        base.set_history(state_id, history)


def w2(recorder, family, dbs, base, repeats, scale):
    context, plan = data.context_variables(), data.plan_data()
    for size in SIZES:
        history = data.history(size)
        _, ss_state = _fresh_state(base, history)
        _, base_state = _fresh_state(base, history)
        versions = {"sessionstate": 1, "baseline": 1}

        def with_ss(i, state_id=ss_state, history=history):
            versions["sessionstate"] = ss.update_state(
                state_id, versions["sessionstate"], conversation_history=history,
                context_variables=context, plan_data=plan, current_phase="execute",
                current_step=i % 1000)

        def with_base(i, state_id=base_state, history=history):
            versions["baseline"] = base.save_state(
                state_id, versions["baseline"], history, context, plan, "execute", i % 1000)

        run_pair(recorder, "W2 n=%d" % size, repeats, max(3, int(OPS["W2"][size] * scale)),
                 {"sessionstate": with_ss, "baseline": with_base})


def w3(recorder, family, dbs, base, repeats, scale):
    for size in SIZES:
        history = data.history(size)
        ss_session, _ = _fresh_state(base, history, "sessionstate")
        base_session, _ = _fresh_state(base, history)

        def with_ss(i, session_id=ss_session, size=size):
            state = ss.get_state(session_id)
            assert len(state.conversation_history) == size

        def with_base(i, session_id=base_session, size=size):
            state = base.get_state(session_id)
            assert len(state["conversation_history"]) == size

        run_pair(recorder, "W3 n=%d" % size, repeats, max(3, int(OPS["W3"][size] * scale)),
                 {"sessionstate": with_ss, "baseline": with_base})


def w4(recorder, family, dbs, base, repeats, scale):
    messages = [data.one_message(seed) for seed in range(64)]
    for size in SIZES:
        history = data.history(size)
        _, ss_state = _fresh_state(base, history, "sessionstate")
        _, base_state = _fresh_state(base, history)
        ops = max(3, int(OPS["W4"][size] * scale))

        def with_ss(i, state_id=ss_state):
            ss.append_messages(state_id, [messages[i % 64]])

        def with_base(i, state_id=base_state):
            base.append_message(state_id, messages[i % 64])

        # Each block starts from a history of exactly `size` messages (reset untimed, after
        # the warm-up appends).
        def reset(side, state_id, history=history):
            return lambda i: _reset_history(base, side, state_id, history) if i == 0 else None

        resets = {"sessionstate": reset("sessionstate", ss_state),
                  "baseline": reset("baseline", base_state)}
        for repeat in range(repeats):
            for side in sides_in_order(repeat):
                operation = with_ss if side == "sessionstate" else with_base
                stats = block_stats(timed_block(operation, ops, warmup=2, prepare=resets[side]))
                recorder.add("W4 n=%d" % size, side, stats)
        recorder.print_row("W4 n=%d" % size)


def _load(base, sessions, states):
    """Bulk-load, then gather the planner's statistics, as a live database's autovacuum (or
    an operator) would have: without them a fresh 100,000-row table is planned blind."""
    t0 = time.perf_counter()
    base.bulk_load(sessions, states)
    base.analyze()
    return time.perf_counter() - t0


def w5(recorder, family, dbs, base_core, repeats, scale):
    url = use(dbs.urls["listing"])
    base = open_baseline(family, url)
    now = dt.datetime.now(UTC)
    sessions, states = data.listing_rows(W5_SESSIONS, now)
    seconds = _load(base, sessions, states)
    log("  (W5: loaded %d sessions in %.1f s)" % (W5_SESSIONS, seconds))
    expected = [row["state_id"] for row in base.list_sessions("active", 50)]

    def with_ss(i):
        rows = ss.list_sessions(status="active", limit=50)
        if i < 0:
            assert [row["state_id"] for row in rows] == expected

    def with_base(i):
        base.list_sessions("active", 50)

    run_pair(recorder, "W5", repeats, max(3, int(OPS["W5"] * scale)),
             {"sessionstate": with_ss, "baseline": with_base})
    base.close()
    use(dbs.urls["core"])


def w6(recorder, family, dbs, base_core, repeats, scale):
    url = use(dbs.urls["purge"])
    base = open_baseline(family, url)
    now = dt.datetime.now(UTC)
    kept, doomed = data.purge_rows(W6_TOTAL, W6_DOOMED, now)
    # The kept sessions are loaded once; each purge deletes exactly the doomed ones, so
    # putting those back before each call restores the table with a hundredth of the rows.
    seconds = _load(base, *kept)
    log("  (W6: loaded %d kept sessions in %.1f s)" % (W6_TOTAL - W6_DOOMED, seconds))
    before = now - dt.timedelta(days=30)
    counts = {}

    def reload(i):
        base.bulk_load(*doomed)

    def with_ss(i):
        counts["sessionstate"] = ss.purge(before)
        assert counts["sessionstate"] == W6_DOOMED, counts

    def with_base(i):
        counts["baseline"] = base.purge(before)
        assert counts["baseline"] == W6_DOOMED, counts

    run_pair(recorder, "W6", repeats, max(3, int(OPS["W6"] * scale)),
             {"sessionstate": with_ss, "baseline": with_base},
             prepare={"sessionstate": reload, "baseline": reload}, warmup=0)
    base.delete_all()
    base.close()
    use(dbs.urls["core"])


def w7(recorder, family, dbs, base, repeats, scale):
    url = dbs.urls["core"]
    duration = max(0.5, W7_SECONDS * min(scale, 1.0))
    context = multiprocessing.get_context("spawn")
    session_id, state_id = base.create_session(
        "copilot", "race", "u-1842", None, data.history(10), {"counter": 0})
    for repeat in range(repeats):
        for side in sides_in_order(repeat):
            before = base.get_state(session_id)
            ready, results, start = context.Queue(), context.Queue(), context.Event()
            workers = [context.Process(target=race.worker, args=(
                side, family, url, session_id, n, duration, ready, start, results))
                for n in range(W7_PROCESSES)]
            for process in workers:
                process.start()
            for _ in workers:
                ready.get(timeout=120)
            start.set()
            reports = [results.get(timeout=120 + duration) for _ in workers]
            for process in workers:
                process.join()
            errors = [report["error"] for report in reports if "error" in report]
            if errors:
                raise RuntimeError("W7 worker failed: %s" % errors[0])
            after = base.get_state(session_id)
            counted = after["context_variables"]["counter"] - before["context_variables"]["counter"]
            stats = race_stats(reports, counted, after["version"] - before["version"])
            recorder.add("W7", side, stats)
            if stats["lost_updates"] or stats["version_drift"]:
                log("  W7 %s: LOST UPDATES: %d commits reported, counter moved %d, version %d"
                    % (side, stats["commits"], counted, stats["commits"] + stats["version_drift"]))
    recorder.print_row("W7")
    summary = recorder.summary("W7")
    for side in ("sessionstate", "baseline"):
        log("      %-12s commits/s %.0f, conflicts per repeat %s, lost updates %s"
            % (side, summary[side]["ops_per_s"], summary[side]["conflicts"],
               summary[side]["lost_updates"]))


def in_event_loop(coroutine_function):
    """An A-workload as the sync workloads are called: one event loop for the whole workload
    (its repeats and sizes), on the core database."""
    def workload(recorder, family, dbs, base, repeats, scale):
        asyncio.run(coroutine_function(recorder, family, dbs.urls["core"], repeats, scale))
    return workload


WORKLOADS = {"W1": w1, "W2": w2, "W3": w3, "W4": w4, "W5": w5, "W6": w6, "W7": w7}
WORKLOADS.update({name: in_event_loop(function)
                  for name, function in aio_workloads.WORKLOADS.items()})


# -- output ----------------------------------------------------------------------------------

def environment(family):
    import peewee

    info = {"python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": os.cpu_count(), "peewee": peewee.__version__,
            "sessionstate": ss.__version__, "backend": family}
    try:
        import orjson

        info["orjson"] = orjson.__version__
    except ImportError:
        info["orjson"] = None
    if family == "sqlite":
        import sqlite3

        info["sqlite"] = sqlite3.sqlite_version
    elif family == "postgresql":
        import psycopg

        info["psycopg"] = psycopg.__version__
    else:
        import pymysql

        info["pymysql"] = pymysql.__version__
    async_driver = {"sqlite": "aiosqlite", "postgresql": "asyncpg", "mysql": "aiomysql"}[family]
    for module in ("greenlet", async_driver):
        info[module] = _version_of(module)
    return info


def _version_of(module):
    try:
        imported = importlib.import_module(module)
    except ImportError:
        return None
    version = getattr(imported, "__version__", None)
    if version is None:
        from importlib import metadata

        try:
            version = metadata.version(module)
        except metadata.PackageNotFoundError:
            version = "?"
    return version


# -- the async rows beside the sync ones ------------------------------------------------------

def sync_name(name):
    """The sync row an async row repeats: A2 n=10 -> W2 n=10."""
    return "W" + name[1:]


def sync_vs_async(summaries, previous):
    """Per async row: aio and its async baseline, the sync API and its baseline (from this
    run, else from the newest of `previous`, the earlier results of the backend, that has
    the row), in ms per operation."""
    table = []
    for name, row in summaries.items():
        if not is_async(name):
            continue
        entry = {"workload": name, "aio_ms": row["sessionstate"]["mean_ms"],
                 "async_baseline_ms": row["baseline"]["mean_ms"], "async_ratio": row["ratio"]}
        sync, source = summaries.get(sync_name(name)), "this run"
        for document in previous if sync is None else ():
            sync = document.get("workloads", {}).get(sync_name(name))
            if sync is not None:
                source = document["date"][:16].replace("T", " ") + " UTC"
                break
        if sync is not None:
            entry.update(sync_ms=sync["sessionstate"]["mean_ms"],
                         sync_baseline_ms=sync["baseline"]["mean_ms"], sync_ratio=sync["ratio"],
                         aio_over_sync=entry["aio_ms"] / sync["sessionstate"]["mean_ms"],
                         sync_source=source)
        table.append(entry)
    return table


def print_sync_vs_async(table):
    if not table:
        return
    log("")
    log("Sync vs async: mean ms per operation (A7/W7: per commit); ratio = sessionstate/baseline")
    log("  %-11s %9s %10s %6s | %-11s %9s %9s %6s | %8s" % (
        "async", "aio", "async base", "ratio", "sync", "ss", "base", "ratio", "aio/sync"))
    sources = set()
    for entry in table:
        head = "  %-11s %9.3f %10.3f %6.2f | " % (entry["workload"], entry["aio_ms"],
                                                 entry["async_baseline_ms"], entry["async_ratio"])
        if "sync_ms" not in entry:
            log(head + "%-11s (not run)" % sync_name(entry["workload"]))
            continue
        mark = "" if entry["sync_source"] == "this run" else "*"
        if mark:
            sources.add(entry["sync_source"])
        log(head + "%-11s %9.3f %9.3f %6.2f | %8.2f" % (
            sync_name(entry["workload"]) + mark, entry["sync_ms"], entry["sync_baseline_ms"],
            entry["sync_ratio"], entry["aio_over_sync"]))
    for source in sorted(sources):
        log("  * sync figures from the results of %s (not run this time)" % source)


def chart(summaries, family, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("(matplotlib is not installed: no chart)")
        return None
    shown = [w for w in ("W2", "W3", "W4")
             if any(n.startswith((w + " ", "A" + w[1:] + " ")) for n in summaries)]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.4 * len(shown) + 0.2, 4.2),
                             squeeze=False)
    lines = (("W", "sessionstate", "o-", "sessionstate"), ("W", "baseline", "s--", "baseline"),
             ("A", "sessionstate", "^-", "sessionstate.aio"),
             ("A", "baseline", "v--", "async baseline"))
    for axis, workload in zip(axes[0], shown):
        for prefix, side, style, label in lines:
            row = prefix + workload[1:]
            points = [(size, summaries["%s n=%d" % (row, size)][side]["p50_ms"])
                      for size in SIZES if "%s n=%d" % (row, size) in summaries]
            if points:
                axis.plot([p[0] for p in points], [p[1] for p in points], style, label=label)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_title("%s / A%s: %s" % (workload, workload[1:], DESCRIPTIONS[workload]),
                       fontsize=9)
        axis.set_xlabel("messages in the history")
        axis.set_ylabel("p50 latency (ms)")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    fig.suptitle("sessionstate vs hand-written SQL on %s (%s)"
                 % (family, dt.date.today().isoformat()))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def previous_results(family):
    """The earlier results of `family`, newest first (for the sync figures of a run without
    them); runs scaled down (--quick, --scale) are left out."""
    documents = []
    for path in sorted(RESULTS_DIR.glob("%s-*.json" % family), reverse=True):
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if document.get("scale", 1.0) >= 1.0:
            documents.append(document)
    return documents


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="", help="sqlite (default), postgresql or mysql")
    # 5: on this machine single blocks stall now and then, and a median of 3 moved by 0.2-0.4.
    parser.add_argument("--repeats", type=int, default=5, help="repeats per workload (>= 3)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply the operations per block (0.2 for a smoke run)")
    parser.add_argument("--quick", action="store_true", help="same as --scale 0.2")
    parser.add_argument("--only", default="", help="comma-separated workloads, e.g. W2,W3,A2")
    parser.add_argument("--no-chart", action="store_true")
    args = parser.parse_args(argv)
    family = args.backend.strip() or "sqlite"
    if family not in ("sqlite", "postgresql", "mysql"):
        parser.error("unknown backend %r" % family)
    scale = 0.2 if args.quick else args.scale
    chosen = [w.strip().upper() for w in args.only.split(",") if w.strip()] or list(WORKLOADS)
    unknown = [name for name in chosen if name not in WORKLOADS]
    if unknown:
        parser.error("unknown workload(s) %s; choose among %s"
                     % (", ".join(unknown), ", ".join(WORKLOADS)))

    info = environment(family)
    started = dt.datetime.now(UTC)
    log("sessionstate bench on %s, %s; %d repeats; average message %.0f bytes"
        % (family, started.strftime("%Y-%m-%d %H:%M UTC"), args.repeats,
           data.average_message_bytes()))
    log("  %s" % ", ".join("%s %s" % item for item in info.items()
                           if item[0] not in ("backend", "platform")))
    dbs = Databases(family)
    recorder = Recorder(family)
    try:
        use(dbs.urls["core"])
        base = open_baseline(family, dbs.urls["core"])
        for name in chosen:
            log("%s: %s" % (name, DESCRIPTIONS[name]))
            WORKLOADS[name](recorder, family, dbs, base, args.repeats, scale)
        base.close()
    finally:
        ss.get_database().close()
        dbs.drop()

    summaries = {name: recorder.summary(name) for name in recorder.rows}
    log("")
    log("Summary (%s): time ratio sessionstate/baseline, median of %d (min-max)"
        % (family, args.repeats))
    for name in recorder.rows:
        recorder.print_row(name)
    table = sync_vs_async(summaries, previous_results(family))
    print_sync_vs_async(table)
    if family in TARGET_FAMILIES:
        missed = recorder.targets_missed()
        log("targets: %s" % ("all met" if not missed else "NOT met: " + ", ".join(missed)))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    document = {"date": started.isoformat(), "environment": info, "repeats": args.repeats,
                "scale": scale, "workloads": summaries,
                "targets": targets_of(family), "sync_vs_async": table,
                "raw": recorder.rows}
    path = RESULTS_DIR / ("%s-%s.json" % (family, stamp))
    path.write_text(json.dumps(document, indent=1, default=str))
    (RESULTS_DIR / ("latest-%s.json" % family)).write_text(path.read_text())
    log("results: %s" % path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)
    if not args.no_chart and any(name.startswith(("W2", "W3", "W4", "A2", "A3", "A4"))
                                 for name in summaries):
        png = chart(summaries, family, RESULTS_DIR / ("latency-vs-history-%s.png" % family))
        if png:
            log("chart: %s" % png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
