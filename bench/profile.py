"""Profile one sessionstate hot path with cProfile, on a fresh SQLite database.

    python -m bench.profile W2 --size 10000 [--calls 20] [--sort tottime] [--top 25]

Workloads: W1 (create_session), W2 (update_state, whole state), W3 (get_state),
W4 (append_messages), W5 (list_sessions over --sessions rows), W6 (purge 1,000
sessions among --sessions).
"""

import argparse
import cProfile
import datetime as dt
import pstats
import shutil
import tempfile
import time

import sessionstate as ss

from . import data
from .baseline import open_baseline

UTC = dt.timezone.utc


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("workload", choices=("W1", "W2", "W3", "W4", "W5", "W6"))
    parser.add_argument("--size", type=int, default=10, help="history length (W2-W4)")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--sessions", type=int, default=100_000, help="sessions for W5 and W6")
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)

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
        profiler = cProfile.Profile()
        t0 = time.perf_counter()
        profiler.enable()
        for i in range(args.calls):
            call(i)
        profiler.disable()
        elapsed = time.perf_counter() - t0
        print("%s size %d: %d calls, %.3f ms per call under the profiler"
              % (args.workload, args.size, args.calls, 1000 * elapsed / args.calls))
        pstats.Stats(profiler).strip_dirs().sort_stats(args.sort).print_stats(args.top)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
