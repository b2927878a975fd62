"""W7's worker: one process racing version-bump saves on one row, retrying on conflict.

Each worker reads the state, increments a counter in context_variables, and writes it back
with the version check; on a conflict it reads again. Afterwards the counter must equal the
number of commits the workers report (otherwise an update was lost).
"""

from bench.timing import RaceTally


def worker(side, family, url, session_id, worker_id, duration, ready, start, results):
    try:
        results.put(_run(side, family, url, session_id, worker_id, duration, ready, start))
    except BaseException as exc:  # report instead of hanging the parent
        results.put({"error": "%s: %s" % (type(exc).__name__, exc)})
        raise


def _run(side, family, url, session_id, worker_id, duration, ready, start):
    if side == "sessionstate":
        import sessionstate as ss

        ss.connect(url)
        ss.get_state(session_id)  # warm: the schema check, the connection

        def attempt():
            state = ss.get_state(session_id)
            context = dict(state.context_variables)
            context["counter"] += 1
            context["last_writer"] = worker_id
            try:
                ss.update_state(state.id, state.version, context_variables=context)
            except ss.StaleStateError:
                return "conflict"
            except ss.DatabaseBusy:
                return "busy"
            return "commit"
    else:
        from bench.baseline import open_baseline

        base = open_baseline(family, url)
        base.get_state(session_id)

        def attempt():
            state = base.get_state(session_id)
            context = dict(state["context_variables"])
            context["counter"] += 1
            context["last_writer"] = worker_id
            if base.bump_context(state["id"], state["version"], context):
                return "commit"
            return "conflict"

    ready.put(worker_id)
    start.wait()
    tally = RaceTally(worker_id, duration)
    while not tally.record(attempt()):
        pass
    return tally.result()
