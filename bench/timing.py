"""Timing blocks of calls, sync or awaited, and their statistics (shared by every workload)."""

import gc
import time


def timed_block(operation, count, warmup=2, prepare=None):
    """Latencies (seconds) of `count` calls operation(i), after `warmup` untimed calls.

    prepare(i), when given, runs untimed before each timed call.
    """
    for i in range(warmup):
        operation(-1 - i)
    gc.collect()
    latencies = []
    clock = time.perf_counter
    for i in range(count):
        if prepare is not None:
            prepare(i)
        t0 = clock()
        operation(i)
        latencies.append(clock() - t0)
    return latencies


async def atimed_block(operation, count, warmup=2, prepare=None):
    """timed_block for coroutine functions: each call awaited, on the running loop."""
    for i in range(warmup):
        await operation(-1 - i)
    gc.collect()
    latencies = []
    clock = time.perf_counter
    for i in range(count):
        if prepare is not None:
            await prepare(i)
        t0 = clock()
        await operation(i)
        latencies.append(clock() - t0)
    return latencies


def percentile(values, fraction):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def block_stats(latencies):
    total = sum(latencies)
    return {"ops": len(latencies), "seconds": total,
            "ops_per_s": len(latencies) / total if total else float("nan"),
            "mean_ms": 1000 * total / len(latencies),
            "p50_ms": 1000 * percentile(latencies, 0.50),
            "p95_ms": 1000 * percentile(latencies, 0.95)}


def sides_in_order(repeat):
    return ("sessionstate", "baseline") if repeat % 2 == 0 else ("baseline", "sessionstate")


def race_stats(reports, counted, versions):
    """One side's figures of a race (W7, A7) from its workers' reports.

    counted, versions: how far the shared counter and the state's version moved.
    Throughput is the whole race's, not one worker's: time per commit = elapsed / commits.
    """
    commits = sum(report["commits"] for report in reports)
    latencies = [x for report in reports for x in report["latencies"]]
    elapsed = max(report["elapsed"] for report in reports)
    stats = block_stats(latencies)
    stats["ops_per_s"] = commits / elapsed
    stats["mean_ms"] = 1000 * elapsed / commits
    stats["commits"] = commits
    stats["conflicts"] = sum(report["conflicts"] for report in reports)
    stats["busy"] = sum(report["busy"] for report in reports)
    stats["lost_updates"] = commits - counted
    stats["version_drift"] = versions - commits
    return stats


class RaceTally:
    """One racing worker's counts (W7, A7): it attempts until `duration` has passed."""

    def __init__(self, worker_id, duration):
        self.worker_id = worker_id
        self.commits = self.conflicts = self.busy = 0
        self.latencies = []
        self.began = self.last_commit = time.perf_counter()
        self.deadline = self.began + duration

    def record(self, outcome):
        """Count an attempt's outcome ("commit", "conflict", else busy); True once done."""
        now = time.perf_counter()
        if outcome == "commit":
            self.commits += 1
            self.latencies.append(now - self.last_commit)  # includes the retries before it
            self.last_commit = now
            return now >= self.deadline
        if outcome == "conflict":
            self.conflicts += 1
        else:
            self.busy += 1
        return False

    def result(self):
        return {"worker": self.worker_id, "commits": self.commits, "conflicts": self.conflicts,
                "busy": self.busy, "elapsed": time.perf_counter() - self.began,
                "latencies": self.latencies}
