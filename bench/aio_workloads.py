"""The async workloads: sessionstate.aio against the bare async driver (bench/abaseline.py).

A1-A4 are W1-W4 awaited, A7 is W7 with asyncio tasks in place of processes. Each workload
runs in one event loop of its own (bench.run calls asyncio.run once per workload): it opens
`aio.connect(url)` and the async baseline's connection once, then every repeat times a block
of aio calls and a block of baseline calls, alternating which goes first, as the sync
workloads do. The "sessionstate" side of an A-row is sessionstate.aio.
"""

import asyncio

import sessionstate as ss
from sessionstate import aio

from . import data
from .abaseline import open_async_baseline
from .timing import RaceTally, atimed_block, block_stats, race_stats, sides_in_order

SIZES = data.SIZES
# Operations per timed block, as for W1-W4 but five times as many for the short calls that
# leave the data as it was: a block of 300 awaited 0.15 ms calls lasted 45 ms, and one stall
# of this machine moved its mean by a fifth (medians of 3 repeats moved by 0.2-0.4). A4
# keeps 300: each append lengthens the history, which must stay near its size.
# --scale multiplies them.
OPS = {
    "A1": 1500,
    "A2": {10: 1500, 1_000: 60, 10_000: 10},
    "A3": {10: 1500, 1_000: 60, 10_000: 10},
    "A4": {10: 300, 1_000: 100, 10_000: 20},
}
A7_TASKS, A7_SECONDS = 8, 3.0

DESCRIPTIONS = {
    "A1": "create a session with its state, awaited",
    "A2": "version-bump save of the whole state, awaited",
    "A3": "load a session's state, awaited",
    "A4": "append one message, awaited",
    "A7": "%d asyncio tasks racing version-bump saves on one row" % A7_TASKS,
}


def log(*parts):
    print(*parts, flush=True)


def ops_of(workload, scale, size=None):
    count = OPS[workload] if size is None else OPS[workload][size]
    return max(3, int(count * scale))


class Sides:
    """Both sides of an A-workload, opened once in the running loop: sessionstate.aio on the
    URL (its pool) and the async baseline's own connection."""

    def __init__(self, family, url):
        self.family, self.url = family, url
        self.base = None

    async def __aenter__(self):
        await aio.connect(self.url)
        await aio.list_sessions(limit=1)  # warm: the pool, the schema check
        self.base = await open_async_baseline(self.family, self.url)
        return self

    async def __aexit__(self, *exc):
        await self.base.close()
        await aio.close()


async def run_pair(recorder, name, repeats, ops, make_ops, prepare=None, warmup=2):
    """Each repeat: the aio block and the baseline block, order alternating."""
    for repeat in range(repeats):
        for side in sides_in_order(repeat):
            latencies = await atimed_block(make_ops[side], ops, warmup=warmup,
                                           prepare=prepare[side] if prepare else None)
            recorder.add(name, side, block_stats(latencies))
    recorder.print_row(name)


async def a1(recorder, family, url, repeats, scale):
    history = data.history(2, seed=1)
    context = data.context_variables()
    meta = {"source": "bench", "tags": ["w1"]}
    async with Sides(family, url) as sides:
        base = sides.base

        async def with_aio(i):
            await aio.create_session("copilot", name="bench session", user_id="u-1842",
                                     meta=meta, conversation_history=history,
                                     context_variables=context)

        async def with_base(i):
            await base.create_session("copilot", "bench session", "u-1842", meta, history,
                                      context)

        await run_pair(recorder, "A1", repeats, ops_of("A1", scale),
                       {"sessionstate": with_aio, "baseline": with_base})


async def _fresh_state(base, history, side="baseline"):
    """(session id, state id) of a new session with `history`, written by `side`."""
    if side == "sessionstate":
        state = await aio.create_session("copilot", name="bench", user_id="u-1842",
                                         conversation_history=history,
                                         context_variables=data.context_variables())
        return state.session_id, state.id
    return await base.create_session("copilot", "bench", "u-1842", None, history,
                                     data.context_variables())


async def a2(recorder, family, url, repeats, scale):
    context, plan = data.context_variables(), data.plan_data()
    async with Sides(family, url) as sides:
        base = sides.base
        for size in SIZES:
            history = data.history(size)
            _, aio_state = await _fresh_state(base, history)
            _, base_state = await _fresh_state(base, history)
            versions = {"sessionstate": 1, "baseline": 1}

            async def with_aio(i, state_id=aio_state, history=history):
                versions["sessionstate"] = await aio.update_state(
                    state_id, versions["sessionstate"], conversation_history=history,
                    context_variables=context, plan_data=plan, current_phase="execute",
                    current_step=i % 1000)

            async def with_base(i, state_id=base_state, history=history):
                versions["baseline"] = await base.save_state(
                    state_id, versions["baseline"], history, context, plan, "execute",
                    i % 1000)

            await run_pair(recorder, "A2 n=%d" % size, repeats, ops_of("A2", scale, size),
                           {"sessionstate": with_aio, "baseline": with_base})


async def a3(recorder, family, url, repeats, scale):
    async with Sides(family, url) as sides:
        base = sides.base
        for size in SIZES:
            history = data.history(size)
            aio_session, _ = await _fresh_state(base, history, "sessionstate")
            base_session, _ = await _fresh_state(base, history)
            # Both sides read the same thing: every column, as the same Python values.
            mine, theirs = await aio.get_state(aio_session), await base.get_state(aio_session)
            differ = [key for key in theirs if getattr(mine, key) != theirs[key]]
            assert not differ, "aio and the async baseline read %s differently" % differ

            async def with_aio(i, session_id=aio_session, size=size):
                state = await aio.get_state(session_id)
                assert len(state.conversation_history) == size

            async def with_base(i, session_id=base_session, size=size):
                state = await base.get_state(session_id)
                assert len(state["conversation_history"]) == size

            await run_pair(recorder, "A3 n=%d" % size, repeats, ops_of("A3", scale, size),
                           {"sessionstate": with_aio, "baseline": with_base})


async def a4(recorder, family, url, repeats, scale):
    messages = [data.one_message(seed) for seed in range(64)]
    async with Sides(family, url) as sides:
        base = sides.base
        for size in SIZES:
            history = data.history(size)
            aio_session, aio_state = await _fresh_state(base, history, "sessionstate")
            _, base_state = await _fresh_state(base, history)

            async def with_aio(i, state_id=aio_state):
                await aio.append_messages(state_id, [messages[i % 64]])

            async def with_base(i, state_id=base_state):
                await base.append_message(state_id, messages[i % 64])

            # Each block starts from a history of exactly `size` messages, reset untimed
            # after the warm-up appends, each side by its own means.
            async def reset_aio(i, session_id=aio_session, history=history):
                if i == 0:
                    state = await aio.get_state(session_id)
                    await aio.update_state(state.id, state.version, conversation_history=history)

            async def reset_base(i, state_id=base_state, history=history):
                if i == 0:
                    await base.set_history(state_id, history)

            await run_pair(recorder, "A4 n=%d" % size, repeats, ops_of("A4", scale, size),
                           {"sessionstate": with_aio, "baseline": with_base},
                           prepare={"sessionstate": reset_aio, "baseline": reset_base})


async def _racer(attempt, worker_id, duration, start):
    """One task of A7: attempts until `duration` has passed, as bench/race.py's workers."""
    await start.wait()
    tally = RaceTally(worker_id, duration)
    while not tally.record(await attempt(worker_id)):
        pass
    return tally.result()


def _aio_attempt(session_id):
    async def attempt(worker_id):
        state = await aio.get_state(session_id)
        context = dict(state.context_variables)
        context["counter"] += 1
        context["last_writer"] = worker_id
        try:
            await aio.update_state(state.id, state.version, context_variables=context)
        except ss.StaleStateError:
            return "conflict"
        except ss.DatabaseBusy:
            return "busy"
        return "commit"
    return attempt


def _base_attempt(base, session_id):
    async def attempt(worker_id):
        state = await base.get_state(session_id)
        context = dict(state["context_variables"])
        context["counter"] += 1
        context["last_writer"] = worker_id
        if await base.bump_context(state["id"], state["version"], context):
            return "commit"
        return "conflict"
    return attempt


async def a7(recorder, family, url, repeats, scale):
    duration = max(0.5, A7_SECONDS * min(scale, 1.0))
    async with Sides(family, url) as sides:
        base = sides.base
        session_id, _ = await base.create_session("copilot", "race", "u-1842", None,
                                                  data.history(10), {"counter": 0})
        # The baseline's tasks: the one aiosqlite connection (it queues every call on its
        # thread), or a connection per task on the servers (as W7's processes each have one).
        if base.shareable:
            task_bases = [base] * A7_TASKS
        else:
            task_bases = [await open_async_baseline(family, url) for _ in range(A7_TASKS)]
        attempts = {"sessionstate": [_aio_attempt(session_id)] * A7_TASKS,
                    "baseline": [_base_attempt(b, session_id) for b in task_bases]}
        try:
            for repeat in range(repeats):
                for side in sides_in_order(repeat):
                    for attempt in attempts[side]:
                        await attempt(-1)  # warm each connection: the outcome is not counted
                    before = await base.get_state(session_id)
                    start = asyncio.Event()
                    tasks = [asyncio.create_task(_racer(attempt, n, duration, start))
                             for n, attempt in enumerate(attempts[side])]
                    await asyncio.sleep(0)  # every task waits on the event
                    start.set()
                    reports = await asyncio.gather(*tasks)
                    after = await base.get_state(session_id)
                    counted = (after["context_variables"]["counter"]
                               - before["context_variables"]["counter"])
                    stats = race_stats(reports, counted, after["version"] - before["version"])
                    recorder.add("A7", side, stats)
                    if stats["lost_updates"] or stats["version_drift"]:
                        log("  A7 %s: LOST UPDATES: %d commits reported, counter moved %d, "
                            "version %d" % (side, stats["commits"], counted,
                                            stats["commits"] + stats["version_drift"]))
        finally:
            for task_base in task_bases:
                if task_base is not base:
                    await task_base.close()
    recorder.print_row("A7")
    summary = recorder.summary("A7")
    for side in ("sessionstate", "baseline"):
        log("      %-12s commits/s %.0f, conflicts per repeat %s, lost updates %s"
            % ("aio" if side == "sessionstate" else side, summary[side]["ops_per_s"],
               summary[side]["conflicts"], summary[side]["lost_updates"]))


WORKLOADS = {"A1": a1, "A2": a2, "A3": a3, "A4": a4, "A7": a7}
