"""Restart under load: workers that outlive their connections (private servers only).

For each server (PostgreSQL, MariaDB) a private instance of tests/instances.py is started
(its own port and data folder; the machine's shared servers are never touched), one state is
created per worker, and WORKERS spawned processes write to their own state in a loop while
this process restarts the server twice (a clean "fast" stop, then a crash-like "immediate"
one). Each write adds one fresh token ("w2-n57"), rotating between update_state (the tokens
list in context_variables, at the version last read), append_messages (a {"token": ...}
message, version-checked) and modify_state. Each outcome is classified:

    returned                          acknowledged: the token must be stored exactly once
    ConnectionLost (in_doubt)         in doubt: the token may be stored, at most once
    any other SessionStateError       not applied (StaleStateError, DatabaseUnavailable...):
                                      the token must not be stored; counted by type
    anything else                     a foreign exception: the test fails

and the state is re-read with get_state (retried on errors with a short pause) before the
next write. Afterwards the database must hold exactly the acknowledged tokens, some of the
in-doubt ones and nothing else, each state's version must be 1 + its number of tokens, every
worker must have run until told to stop and exited 0, every worker must have had writes
acknowledged after each restart (it recovered), and no call may have failed while the server
was up (outside a restart: a dead connection is replaced, not reported).

No assertion depends on how fast anything is; the time limits only bound a hung run. The
per-server figures are printed (visible with ``pytest -s``).
"""

import collections
import faulthandler
import multiprocessing
import os
import queue
import threading
import time
import traceback

import pytest

import sessionstate
from sessionstate import ConnectionLost, SessionStateError

from instances import MariaDBInstance, PostgresInstance

UNDER_CI = os.environ.get("CI", "").lower() == "true"

WORKERS = 4
RUN_SECONDS = 20.0            # the workers write for about this long
RESTARTS = ((6.0, "fast"), (13.0, "immediate"))   # (seconds after the start line, stop mode)
MIN_UP_SECONDS = 4.0          # the server stays up at least this long after each restart
BARRIER_TIMEOUT = 30.0        # for every worker to reach the start line (interpreter start-up)
WORKER_HARD_STOP = 60.0       # a worker stops by itself this long after the start line
DUMP_AFTER = 65.0             # a worker still running then dumps its stack (hang diagnosis)
REPORT_DEADLINE = 75.0        # reports are due this long after the start line, else: hung
REREAD_PAUSE = 0.05           # between get_state attempts that failed
RECOVERY_TAIL = 3.0           # some writes must be acknowledged in the run's last seconds
KINDS = ("update", "append", "modify")

SERVERS = {
    "postgresql": (PostgresInstance, "psycopg"),
    "mysql": (MariaDBInstance, "pymysql"),
}


# -- the worker (a spawned process) ------------------------------------------------------------

def _describe(exc):
    """'Type: first line (cause: Type: first line)' for the parent's report."""
    def one(error):
        kind = type(error)
        lines = str(error).splitlines()
        return "%s.%s: %s" % (kind.__module__, kind.__qualname__, lines[0] if lines else "")
    text = one(exc)
    cause = exc.__cause__ or exc.__context__
    if cause is not None:
        text += " (cause: %s)" % one(cause)
    return text


def _worker(url, index, state_id, session_id, barrier, stop, results, dump_path, api_kind):
    """Write tokens to one state until `stop` is set; report everything to `results`.

    api_kind "async" makes every call through sessionstate.aio, on this worker's own loop.
    """
    report = {
        "index": index,
        "writes": [],          # (token, kind, outcome, exception type or None, t0, t1)
        "read_failures": [],   # (exception type, t0, t1)
        "foreign": [],         # descriptions of exceptions that are not SessionStateErrors
        "anomalies": [],       # anything else that must not happen
        "samples": {},         # exception type -> first few descriptions
        "longest": (0.0, None),
        "ran_until_stop": False,
        "started": None,
        "ended": None,
    }

    def note(exc):
        name = type(exc).__name__
        seen = report["samples"].setdefault(name, [])
        if len(seen) < 3:
            described = _describe(exc)
            if described not in seen:
                seen.append(described)
        return name

    def timed(name, call, *args, **kwargs):
        started = time.monotonic()
        try:
            return call(*args, **kwargs)
        finally:
            took = time.monotonic() - started
            if took > report["longest"][0]:
                report["longest"] = (took, name)

    dump = open(dump_path, "w")
    try:
        try:
            if api_kind == "async":
                from conftest import AsyncAPI

                api = AsyncAPI(url)
            else:
                api = sessionstate
                sessionstate.connect(url)
            barrier.wait(BARRIER_TIMEOUT)
        except BaseException as exc:  # noqa: B036 - report it, whatever it is
            report["anomalies"].append("could not get to the start line: %s\n%s"
                                       % (_describe(exc), traceback.format_exc()))
            return
        start = report["started"] = time.monotonic()
        hard_stop = start + WORKER_HARD_STOP
        faulthandler.dump_traceback_later(DUMP_AFTER, exit=False, file=dump)

        def reread():
            """The state as stored now; None when told to stop before a read succeeded."""
            while True:
                t0 = time.monotonic()
                try:
                    return timed("get_state", api.get_state, session_id)
                except SessionStateError as exc:
                    report["read_failures"].append((note(exc), t0, time.monotonic()))
                except Exception as exc:  # noqa: BLE001 - a foreign exception: record it
                    note(exc)
                    report["foreign"].append("get_state: %s\n%s"
                                             % (_describe(exc), traceback.format_exc()))
                    report["read_failures"].append((type(exc).__name__, t0, time.monotonic()))
                if stop.is_set() or time.monotonic() > hard_stop:
                    return None
                time.sleep(REREAD_PAUSE)

        state = reread()
        number = 0
        while state is not None and not stop.is_set() and time.monotonic() < hard_stop:
            number += 1
            token = "w%d-n%d" % (index, number)
            kind = KINDS[(number - 1) % len(KINDS)]
            version = state.version
            tokens = list(state.context_variables["tokens"])
            t0 = time.monotonic()
            outcome, error = "ack", None
            try:
                if kind == "update":
                    new_version = timed("update_state", api.update_state, state_id,
                                        version, context_variables={"tokens": tokens + [token]})
                elif kind == "append":
                    new_version = timed("append_messages", api.append_messages,
                                        state_id, [{"token": token}], expected_version=version)
                else:
                    new_version = timed("modify_state", api.modify_state, state_id,
                                        lambda s: {"context_variables": {
                                            "tokens": s.context_variables["tokens"] + [token]}})
                # This worker is its state's only writer: each write is exactly one bump.
                if new_version != version + 1:
                    report["anomalies"].append(
                        "%s of %s returned version %r after reading version %d"
                        % (kind, token, new_version, version))
            except ConnectionLost as exc:
                outcome, error = "doubt", note(exc)
                if getattr(exc, "in_doubt", None) is not True:
                    report["anomalies"].append("ConnectionLost without in_doubt=True: %s"
                                               % _describe(exc))
            except SessionStateError as exc:
                outcome, error = "not_applied", note(exc)
            except Exception as exc:  # noqa: BLE001 - a foreign exception: record it
                outcome, error = "foreign", note(exc)
                report["foreign"].append("%s of %s: %s\n%s" % (kind, token, _describe(exc),
                                                               traceback.format_exc()))
            report["writes"].append((token, kind, outcome, error, t0, time.monotonic()))
            state = reread()
        report["ran_until_stop"] = stop.is_set()
    except BaseException as exc:  # noqa: B036 - report it, whatever it is
        report["anomalies"].append("the worker failed: %s\n%s"
                                   % (_describe(exc), traceback.format_exc()))
    finally:
        faulthandler.cancel_dump_traceback_later()
        dump.close()
        report["ended"] = time.monotonic()
        results.put(report)


# -- the parent --------------------------------------------------------------------------------

def _require(family):
    cls, driver = SERVERS[family]
    reason = cls.unavailable_reason()
    if reason is None:
        try:
            __import__(driver)
        except ImportError as exc:
            reason = "the driver %s is not installed (%s)" % (driver, exc)
    if reason:
        message = "%s instances cannot run here: %s" % (cls.kind, reason)
        if UNDER_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return cls


def _sleep_until(moment, processes, early_deaths, started):
    """Sleep until `moment`, noting workers that exit before the run is over."""
    while True:
        for index, process in enumerate(processes):
            if not process.is_alive() and index not in early_deaths:
                early_deaths[index] = (time.monotonic() - started, process.exitcode)
        left = moment - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.1))


def _counts(counter):
    return ", ".join("%s=%d" % item for item in sorted(counter.items())) or "none"


@pytest.mark.parametrize("api_kind", ["sync", "async"])
@pytest.mark.parametrize("family", sorted(SERVERS))
def test_restart_under_load(family, api_kind, tmp_path):
    cls = _require(family)
    context = multiprocessing.get_context("spawn")
    instance = cls()
    processes = []
    results = None
    try:
        instance.start()
        url = instance.url
        db = sessionstate.connect(url)
        sessionstate.migrate(db)
        states = [sessionstate.create_session("copilot", context_variables={"tokens": []})
                  for _ in range(WORKERS)]
        for state in states:
            assert sessionstate.get_state(state.session_id).version == 1
        db.close()

        barrier = context.Barrier(WORKERS + 1)
        stop = context.Event()
        results = context.Queue()
        dumps = [str(tmp_path / ("worker-%d.stack" % index)) for index in range(WORKERS)]
        processes = [context.Process(target=_worker, name="restart-worker-%d" % index,
                                     args=(url, index, state.id, state.session_id, barrier,
                                           stop, results, dumps[index], api_kind),
                                     daemon=True)
                     for index, state in enumerate(states)]
        for process in processes:
            process.start()

        # -- the run: start line, two restarts, stop
        problems = []
        restarts = []  # (began, ended, mode)
        early_deaths = {}
        try:
            barrier.wait(BARRIER_TIMEOUT)
        except threading.BrokenBarrierError:
            problems.append("the workers did not all reach the start line within %.0f s"
                            % BARRIER_TIMEOUT)
        started = time.monotonic()
        if not problems:
            moment = started
            for at, mode in RESTARTS:
                moment = max(started + at, moment + MIN_UP_SECONDS)
                _sleep_until(moment, processes, early_deaths, started)
                began = time.monotonic()
                instance.restart(mode=mode)
                moment = time.monotonic()
                restarts.append((began, moment, mode))
            _sleep_until(max(started + RUN_SECONDS, moment + MIN_UP_SECONDS), processes,
                         early_deaths, started)
        stopped = time.monotonic()
        stop.set()

        # -- collect the reports (drained before joining: a full pipe would block the exit)
        reports = {}
        deadline = started + REPORT_DEADLINE
        while len(reports) < WORKERS:
            try:
                report = results.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                if time.monotonic() >= deadline or not any(p.is_alive() for p in processes):
                    break
                continue
            reports[report["index"]] = report
        for process in processes:
            process.join(max(0.1, deadline + 10 - time.monotonic()))

        for index, process in enumerate(processes):
            if index in early_deaths:
                at, code = early_deaths[index]
                problems.append("worker %d exited %.1f s into the run (exit code %s), before "
                                "it was told to stop" % (index, at, code))
            if index not in reports:
                stack = ""
                if os.path.exists(dumps[index]):
                    with open(dumps[index]) as handle:
                        stack = handle.read().strip()
                problems.append("worker %d sent no report (hung?); exit code %s%s"
                                % (index, process.exitcode,
                                   "; its stack:\n" + stack if stack else ""))
            elif process.exitcode != 0:
                problems.append("worker %d exited with code %s" % (index, process.exitcode))

        # -- what the workers saw
        ack, doubt, not_applied, foreign_tokens = {}, {}, {}, {}
        kind_of = {}
        failure_types = collections.Counter()
        read_failure_types = collections.Counter()
        samples = {}
        longest = (0.0, None)
        failures = []  # (who, exception type, t0, t1), for the calls that did not succeed
        for index in sorted(reports):
            report = reports[index]
            for kind, texts in report["samples"].items():
                samples.setdefault(kind, [])
                samples[kind].extend(text for text in texts if text not in samples[kind])
            for text in report["foreign"]:
                problems.append("worker %d met a foreign exception: %s" % (index, text))
            for text in report["anomalies"]:
                problems.append("worker %d: %s" % (index, text))
            if report["started"] is not None and not report["ran_until_stop"]:
                problems.append("worker %d stopped writing %.1f s into the run, before it was "
                                "told to stop" % (index, report["ended"] - started))
            if report["longest"][0] > longest[0]:
                longest = report["longest"]
            for token, kind, outcome, error, t0, t1 in report["writes"]:
                kind_of[token] = kind
                if outcome == "ack":
                    ack[token] = (index, t1)
                    continue
                {"doubt": doubt, "not_applied": not_applied,
                 "foreign": foreign_tokens}[outcome][token] = error
                if outcome == "not_applied":
                    failure_types[error] += 1
                failures.append(("%s of %s" % (kind, token), error, t0, t1))
            for error, t0, t1 in report["read_failures"]:
                read_failure_types[error] += 1
                failures.append(("get_state by worker %d" % index, error, t0, t1))

        # -- what the database holds (a fresh connection: checking is not what is tested)
        stored = collections.Counter()
        versions = {}
        verify = sessionstate.connect(url)
        try:
            for index, state in enumerate(states):
                final = sessionstate.get_state(state.session_id)
                in_variables = list(final.context_variables["tokens"])
                in_history = []
                for message in final.conversation_history:
                    if set(message) != {"token"}:
                        problems.append("state %d holds an unexpected message %r"
                                        % (index, message))
                    else:
                        in_history.append(message["token"])
                for token in in_variables + in_history:
                    stored[token] += 1
                for token in in_variables:
                    if kind_of.get(token) == "append":
                        problems.append("%s was appended as a message but is in "
                                        "context_variables" % token)
                for token in in_history:
                    if kind_of.get(token) in ("update", "modify"):
                        problems.append("%s was written to context_variables but is a message"
                                        % token)
                for token in in_variables + in_history:
                    if not token.startswith("w%d-" % index):
                        problems.append("%s is in the state of worker %d" % (token, index))
                present = len(in_variables) + len(in_history)
                versions[index] = (final.version, present)
                if final.version != 1 + present:
                    problems.append("state %d is at version %d but holds %d tokens (expected "
                                    "version %d)" % (index, final.version, present, 1 + present))
        finally:
            verify.close()

        for token in sorted(ack):
            if stored[token] != 1:
                problems.append("acknowledged %s is stored %d times" % (token, stored[token]))
        for token in sorted(doubt):
            if stored[token] > 1:
                problems.append("in-doubt %s is stored %d times" % (token, stored[token]))
        for token in sorted(foreign_tokens):
            if stored[token] > 1:
                problems.append("%s (foreign exception) is stored %d times"
                                % (token, stored[token]))
        for token in sorted(stored):
            if token in ack or token in doubt or token in foreign_tokens:
                continue
            if token in not_applied:
                problems.append("%s was reported not applied (%s) but is stored %d time(s)"
                                % (token, not_applied[token], stored[token]))
            else:
                problems.append("unknown token %r is stored" % token)
        landed = sum(1 for token in doubt if stored[token] == 1)

        # -- recovery: after each restart every worker had writes acknowledged
        windows = []  # the spans in which the server was up: (name, start, end)
        edge = started
        for number, (began, ended, mode) in enumerate(restarts, 1):
            windows.append(("before restart %d" % number if number == 1
                            else "after restart %d" % (number - 1), edge, began))
            edge = ended
        windows.append(("after restart %d" % len(restarts) if restarts else "the run",
                        edge, stopped))
        survived = 0
        for number, (began, ended, mode) in enumerate(restarts, 1):
            window_end = restarts[number][0] if number < len(restarts) else stopped
            recovered = [index for index in sorted(reports)
                         if any(ended < at <= window_end for who, at in ack.values()
                                if who == index)]
            missing = sorted(set(range(WORKERS)) - set(recovered))
            if missing:
                problems.append("after restart %d (%s) no write of worker(s) %s was "
                                "acknowledged before %s" % (
                                    number, mode, ", ".join(map(str, missing)),
                                    "the next restart" if number < len(restarts)
                                    else "the stop"))
            else:
                survived += 1
        tail = sum(1 for who, at in ack.values() if at > stopped - RECOVERY_TAIL)
        if reports and tail == 0:
            problems.append("no write was acknowledged in the last %.0f s of the run"
                            % RECOVERY_TAIL)

        # -- while the server was up, nothing may fail (a dropped connection is replaced)
        while_up = []
        for what, error, t0, t1 in failures:
            if error == "StaleStateError":
                continue  # a conflict, not a connection problem
            for name, start, end in windows:
                if start <= t0 and t1 <= end:
                    while_up.append("%s: %s %.2f-%.2f s into the run, %s (server up from "
                                    "%.2f to %.2f s)" % (what, error, t0 - started,
                                                         t1 - started, name, start - started,
                                                         end - started))
                    break
        if while_up:
            problems.append("%d call(s) failed while the server was up; the first ones:\n  %s"
                            % (len(while_up), "\n  ".join(while_up[:10])))

        # -- the figures
        print("\n[restart under load: %s] restarts survived: %d of %d (%s); acknowledged "
              "writes checked: %d; in doubt (ConnectionLost): %d (%d of them landed); not "
              "applied: %s; get_state failures: %s; foreign exceptions: %d; longest call: "
              "%.0f ms (%s); restarts took %s"
              % (family, survived, len(RESTARTS),
                 ", ".join(mode for _, _, mode in restarts) or "none", len(ack), len(doubt),
                 landed, _counts(failure_types), _counts(read_failure_types),
                 sum(len(r["foreign"]) for r in reports.values()), longest[0] * 1000,
                 longest[1],
                 ", ".join("%.1f s" % (ended - began) for began, ended, _ in restarts)
                 or "-"))
        print("[restart under load: %s] versions (final, tokens) per state: %s"
              % (family, versions))
        for kind in sorted(samples):
            for text in samples[kind]:
                print("[restart under load: %s]   seen: %s" % (family, text))
        if problems:
            print("[restart under load: %s] %d problem(s):\n  %s"
                  % (family, len(problems), "\n  ".join(problems[:40])))

        assert not problems, "%d problem(s) on %s:\n%s" % (len(problems), family,
                                                         "\n".join(problems[:40]))
    finally:
        if results is not None:
            results.cancel_join_thread()
        for process in processes:
            if process.is_alive():
                process.kill()
        for process in processes:
            process.join(10)
        instance.cleanup()
