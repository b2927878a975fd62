"""What tests/test_openai_agents.py runs in other processes: racing workers and SDK turns.

Workers are started with multiprocessing's 'spawn' context (fresh interpreters), meet on a
barrier so that they really overlap, and report (index, payload, errors) back; every
exception is caught and reported, and the test asserts there is none. `turn` is the body of
`python -m agents_workers turn URL SESSION_ID TEXT`: one Runner.run in a new process.
"""

import asyncio
import json
import multiprocessing
import queue
import sys
import time

BARRIER_TIMEOUT = 30  # seconds for every worker to reach the start line
RUN_TIMEOUT = 120  # seconds for a whole race before it is declared hung


def describe(exc):
    lines = str(exc).splitlines()
    return "%s.%s: %s" % (type(exc).__module__, type(exc).__qualname__,
                          lines[0] if lines else "")


def _child(task, url, index, barrier, results, args):
    errors = []
    payload = None
    try:
        payload = asyncio.run(_in_loop(TASKS[task], url, index, barrier, errors, args))
    except BaseException as exc:  # noqa: B036 - report everything, whatever it is
        errors.append(describe(exc))
    results.put((index, payload, errors))


async def _in_loop(task, url, index, barrier, errors, args):
    from sessionstate import aio

    await aio.connect(url)
    try:
        await aio.list_sessions(limit=1)  # connected and schema-checked before the start line
        return await task(url, index, barrier, errors, *args)
    finally:
        await aio.close()


def run_workers(task, url, *args, count=4):
    """Run `count` spawned workers on TASKS[task]; [(payload, errors)] in worker order."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(count)
    results = context.Queue()
    processes = [context.Process(target=_child, args=(task, url, index, barrier, results, args),
                                 name="%s-%d" % (task, index), daemon=True)
                 for index in range(count)]
    for process in processes:
        process.start()
    reports = {}
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        silent_polls = 0
        while len(reports) < count:
            try:
                index, payload, errors = results.get(timeout=0.5)
            except queue.Empty:
                dead = [p.name for i, p in enumerate(processes)
                        if i not in reports and p.exitcode is not None]
                silent_polls = silent_polls + 1 if dead else 0
                assert silent_polls < 3, "workers died without reporting: %s" % dead
                assert time.monotonic() < deadline, "workers did not report in %d s" % (
                    RUN_TIMEOUT,)
                continue
            reports[index] = (payload, errors)
        for process in processes:
            process.join(timeout=max(deadline - time.monotonic(), 1))
            assert process.exitcode == 0, "%s exited with %s" % (process.name, process.exitcode)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
        results.close()
    return [reports[index] for index in range(count)]


async def start_line(barrier):
    await asyncio.to_thread(barrier.wait, BARRIER_TIMEOUT)


# -- the tasks (in the workers) ---------------------------------------------------------------

async def first_use_task(url, index, barrier, errors, session_id, first_call):
    """A brand-new session object's first call, all workers at once; then one add."""
    from sessionstate.openai_agents import SessionStateSession

    session = SessionStateSession(session_id)
    await start_line(barrier)
    if first_call == "get_items":
        await session.get_items()
    await session.add_items([{"role": "user", "content": "from worker %d" % index,
                              "worker": index}])
    return session.sessionstate_id


async def pop_task(url, index, barrier, errors, session_id):
    """Pop until the history is empty; the items popped, in order."""
    from sessionstate.openai_agents import SessionStateSession

    session = SessionStateSession(session_id)
    await session.get_items(limit=1)  # the state id known before the start line
    await start_line(barrier)
    popped = []
    while True:
        try:
            item = await session.pop_item()
        except Exception as exc:
            errors.append(describe(exc))
            break
        if item is None:
            return popped
        popped.append(item)
    return popped


async def pop_and_add_task(url, index, barrier, errors, session_id, count):
    """Even workers add `count` items one call at a time (two items per call); odd ones pop
    `count` times, keeping what they got (None when the history was empty)."""
    from sessionstate.openai_agents import SessionStateSession

    session = SessionStateSession(session_id)
    await session.get_items(limit=1)
    await start_line(barrier)
    done = []
    for i in range(count):
        try:
            if index % 2 == 0:
                pair = [{"worker": index, "i": i, "part": part} for part in (0, 1)]
                await session.add_items(pair)
                done += pair
            else:
                item = await session.pop_item()
                if item is not None:
                    done.append(item)
        except Exception as exc:
            errors.append(describe(exc))
    return ("added" if index % 2 == 0 else "popped", done)


TASKS = {"first_use": first_use_task, "pop": pop_task, "pop_and_add": pop_and_add_task}


# -- one SDK turn in a new process ------------------------------------------------------------

async def turn(url, session_id, text, streamed=False):
    """Runner.run(agent, text) with the fake model on SessionStateSession(session_id, url=url);
    returns the final output and the inputs the model was sent."""
    import agents
    from agents import Agent, Runner, function_tool

    from fake_model import FakeModel
    from sessionstate import aio
    from sessionstate.openai_agents import SessionStateSession

    agents.set_tracing_disabled(True)

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny in %s, 22 °C ☀" % city

    model = FakeModel()
    agent = Agent(name="Assistant", instructions="Answer briefly.", model=model,
                  tools=[get_weather])
    session = SessionStateSession(session_id, url=url)
    try:
        if streamed:
            result = Runner.run_streamed(agent, text, session=session)
            async for _ in result.stream_events():
                pass
        else:
            result = await Runner.run(agent, text, session=session)
        return {"final_output": result.final_output, "model_inputs": model.calls}
    finally:
        await aio.close()


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    assert command == "turn", command
    url, session_id, text, mode = arguments
    print(json.dumps(asyncio.run(turn(url, session_id, text, streamed=mode == "streamed"))))
