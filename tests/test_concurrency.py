"""Concurrency and crash safety with real OS processes, on every backend.

Each racing test starts its workers with multiprocessing's 'spawn' context (fresh
interpreters, nothing inherited from this process but the environment), lines them up on a
barrier so that they really overlap, and lets each one catch *everything* it meets and report
the exception's type and message back: the assertion is that there is nothing to report,
not "database is locked", not a deadlock, not a driver error, not even one of our own errors.

The crash tests SIGKILL a writer in the middle of a stream of commits: alone (a `python -c`
writer whose reported versions are read from a pipe; integrity, version and data checked
after each of several kills), and while other processes race with it on the same state (they
must all finish, and nothing committed may be lost or counted twice).

No assertion depends on timing; the timeouts only bound a hung run.
"""

import multiprocessing
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import sessionstate
from sessionstate import Session, SessionState, dialects
from sessionstate.migrate import HISTORY_TABLE, applied, available

WORKERS = 4
BARRIER_TIMEOUT = 30  # seconds for every worker to reach the start line (interpreter start-up)
RUN_TIMEOUT = 60  # seconds for a whole racing test before it is declared hung


# -- running workers --------------------------------------------------------------------------

def _describe(exc):
    kind = type(exc)
    message = str(exc).splitlines()
    return "%s.%s: %s" % (kind.__module__, kind.__qualname__, message[0] if message else "")


def _child(task, url, index, barrier, results, args):
    """A worker process's body: run `task`, report (index, payload, errors) to the parent."""
    errors = []
    payload = None
    try:
        payload = TASKS[task](url, index, barrier, errors, *args)
    except BaseException as exc:  # noqa: B036 - report everything, whatever it is
        errors.append(_describe(exc))
    results.put((index, payload, errors))


def run_workers(task, url, *args, count=WORKERS, alongside=None):
    """Run `count` spawned workers on `task`; their (payload, errors), in worker order.

    `alongside(context, barrier)`, if given, is called here once the workers are started; the
    barrier has one more party for what it starts, and it returns before results are read.
    """
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(count + (1 if alongside else 0))
    results = context.Queue()
    processes = [context.Process(target=_child, args=(task, url, index, barrier, results, args),
                                 name="%s-%d" % (task, index), daemon=True)
                 for index in range(count)]
    for process in processes:
        process.start()
    reports = {}
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        if alongside:
            alongside(context, barrier)
        exited_silent = 0  # consecutive empty polls with a silent worker already gone
        while len(reports) < count:
            try:
                index, payload, errors = results.get(timeout=0.5)
            except queue.Empty:
                silent = sorted(set(range(count)) - set(reports))
                dead = [processes[i].name for i in silent if processes[i].exitcode is not None]
                # A report is in the pipe before its sender exits, so two empty polls after
                # the exit mean the worker died without one (a crash, not an exception).
                exited_silent = exited_silent + 1 if dead else 0
                assert exited_silent < 3, "workers died without reporting: %s" % dead
                if time.monotonic() >= deadline:
                    pytest.fail("workers %s did not report within %d s" % (silent, RUN_TIMEOUT))
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


def assert_no_errors(reports):
    seen = {index: errors for index, (_, errors) in enumerate(reports) if errors}
    assert seen == {}, "workers met exceptions: %r" % (seen,)


# -- the workers' tasks (run in the child processes) ------------------------------------------

def _migrate_task(url, index, barrier, errors, urls):
    """Migrate each database of `urls` in turn, all workers starting each one together."""
    rounds = []
    for target in urls:
        # Start line first: connect() is where a SQLite file gets created and switched to
        # WAL, so the race covers that too.
        barrier.wait(BARRIER_TIMEOUT)
        try:
            database = sessionstate.connect(target)
            names = sessionstate.migrate(database)
            journal = None
            if dialects.of(database).name == "sqlite":
                journal = database.execute_sql("PRAGMA journal_mode").fetchone()[0]
            database.close()
            rounds.append({"applied": names, "journal_mode": journal})
        except Exception as exc:  # keep going, so that the others are not left at the barrier
            errors.append(_describe(exc))
            rounds.append(None)
    return rounds


def _increment(state):
    variables = dict(state.context_variables)
    variables["counter"] += 1
    return {"context_variables": variables}


def _modify_task(url, index, barrier, errors, state_id, count, attempts=None):
    database = sessionstate.connect(url)
    SessionState.get_by_id(state_id)  # connected and schema-checked before the start line
    barrier.wait(BARRIER_TIMEOUT)
    versions = []
    options = {"attempts": attempts} if attempts else {}
    for _ in range(count):
        try:
            versions.append(sessionstate.modify_state(state_id, _increment, **options))
        except Exception as exc:
            errors.append(_describe(exc))
    database.close()
    return versions


def _append_task(url, index, barrier, errors, state_id, count):
    database = sessionstate.connect(url)
    SessionState.get_by_id(state_id)
    barrier.wait(BARRIER_TIMEOUT)
    versions = []
    for i in range(count):
        try:
            versions.append(sessionstate.append_messages(
                state_id, [{"role": "user", "worker": index, "i": i}]))
        except Exception as exc:
            errors.append(_describe(exc))
    database.close()
    return versions


def _mixed_task(url, index, barrier, errors, state_id, count):
    """Even workers increment the counter with modify_state, odd ones append messages."""
    if index % 2 == 0:
        return ("modify", _modify_task(url, index, barrier, errors, state_id, count))
    return ("append", _append_task(url, index, barrier, errors, state_id, count))


def _pop_task(url, index, barrier, errors, state_id):
    """Pop until the history is empty; every item popped, in order of popping."""
    database = sessionstate.connect(url)
    SessionState.get_by_id(state_id)
    barrier.wait(BARRIER_TIMEOUT)
    popped = []
    while True:
        try:
            item = sessionstate.pop_message(state_id)
        except Exception as exc:
            errors.append(_describe(exc))
            break
        if item is None:
            break
        popped.append(item)
    database.close()
    return popped


TASKS = {
    "pop": _pop_task,
    "migrate": _migrate_task,
    "modify": _modify_task,
    "append": _append_task,
    "mixed": _mixed_task,
}


# -- 1. migrating a fresh database from several processes at once -----------------------------

SESSIONS_COLUMNS = {"id", "name", "user_id", "status", "meta", "created_at", "last_active_at"}
SESSION_STATES_COLUMNS = {
    "id", "session_id", "mode", "conversation_history", "context_variables", "plan_data",
    "current_phase", "current_step", "status", "created_at", "updated_at", "expires_at",
    "version"}
INDEXES = {
    "sessions": {"idx_sessions_user_id"},
    "session_states": {
        "idx_session_states_session_id", "idx_session_states_status",
        "idx_session_states_session_status", "idx_session_states_mode",
        "idx_session_states_updated", "idx_session_states_status_updated",
        "idx_session_states_session_latest"},
}


# Two connections switching a brand-new SQLite file to WAL at the same moment is a narrow
# window (a few per cent of 4-process races hit it), so SQLite races on several fresh files
# with the same 4 processes; the servers' database is one per test run.
SQLITE_MIGRATE_ROUNDS = 40


def test_processes_migrating_a_fresh_database_at_once(backend, url, tmp_path):
    if backend == "sqlite":
        urls = ["sqlite:///%s" % (tmp_path / ("fresh-%02d.db" % n))
                for n in range(SQLITE_MIGRATE_ROUNDS)]
        for target in urls:
            assert not os.path.exists(target[len("sqlite:///"):])  # the WAL switch races too
    else:
        urls = [url]

    reports = run_workers("migrate", url, urls)

    assert_no_errors(reports)
    for round_, target in enumerate(urls):
        outcomes = [payload[round_] for payload, _ in reports]
        applied_by = [outcome["applied"] for outcome in outcomes]
        assert sorted(name for names in applied_by for name in names) == available()
        assert [names for names in applied_by if names] == [available()]  # one did it all
        if backend == "sqlite":
            assert {outcome["journal_mode"] for outcome in outcomes} == {"wal"}
        check_schema(backend, target)


def check_schema(backend, target):
    """The database at `target` is at the head, with every table and index, and usable."""
    database = sessionstate.connect(target)
    try:
        names = [row[0] for row in database.execute_sql("SELECT name FROM %s" % HISTORY_TABLE)]
        assert sorted(names) == available()  # each exactly once
        assert applied(database) == available()
        assert sessionstate.migration_status(database) == (available(), [])
        assert {"sessions", "session_states", HISTORY_TABLE} <= set(database.get_tables())
        assert {c.name for c in database.get_columns("sessions")} == SESSIONS_COLUMNS
        assert {c.name for c in database.get_columns("session_states")} == SESSION_STATES_COLUMNS
        for table, expected in INDEXES.items():
            found = {index.name for index in database.get_indexes(table)
                     if index.name.startswith("idx_")}
            assert found == expected, table
        state = sessionstate.create_session("copilot")
        assert sessionstate.get_state(state.session_id).version == 1
        if backend == "sqlite":
            assert database.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert database.execute_sql("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        database.close()


# -- 2. modify_state from several processes ---------------------------------------------------

@pytest.mark.parametrize("attempts", [None, 1000])  # the default, and the 1000
def test_processes_incrementing_one_counter_with_modify_state(migrated, url, attempts):
    state = sessionstate.create_session("copilot", context_variables={"counter": 0})
    per_worker = 100

    reports = run_workers("modify", url, state.id, per_worker, attempts)

    assert_no_errors(reports)
    versions = [version for payload, _ in reports for version in payload]
    # Every call wrote exactly once, and got its own version back.
    assert sorted(versions) == list(range(2, 2 + WORKERS * per_worker))
    for payload, _ in reports:
        assert payload == sorted(payload)  # a worker's own writes come in its order
    final = SessionState.get_by_id(state.id)
    assert final.context_variables == {"counter": WORKERS * per_worker}
    assert final.version == 1 + WORKERS * per_worker


def test_modify_state_calls_fn_holding_no_lock(migrated):
    """While fn runs (think: an LLM call), a writer to another session is not held up."""
    mine = sessionstate.create_session("copilot", context_variables={"counter": 0})
    other = sessionstate.create_session("copilot")
    in_fn, release, outcome = threading.Event(), threading.Event(), {}

    def slow(state):
        in_fn.set()
        assert release.wait(RUN_TIMEOUT)
        return {"current_step": 1}

    def modify():
        try:
            outcome["modify"] = sessionstate.modify_state(mine.id, slow, attempts=1)
        except Exception as exc:  # noqa: BLE001 - reported below
            outcome["modify"] = exc

    def write_other():
        try:
            outcome["other"] = sessionstate.update_state(other.id, 1, current_step=5)
        except Exception as exc:  # noqa: BLE001
            outcome["other"] = exc

    modifier = threading.Thread(target=modify)
    modifier.start()
    assert in_fn.wait(RUN_TIMEOUT)
    writer = threading.Thread(target=write_other)
    writer.start()
    writer.join(RUN_TIMEOUT)
    done_while_fn_ran = not writer.is_alive()
    release.set()
    modifier.join(RUN_TIMEOUT)
    writer.join(RUN_TIMEOUT)
    assert done_while_fn_ran and outcome["other"] == 2, outcome
    assert outcome["modify"] == 2, outcome


def test_processes_popping_one_history_never_share_or_lose_an_item(migrated, url):
    items = [{"n": n} for n in range(120)]
    state = sessionstate.create_session("copilot", conversation_history=items)

    reports = run_workers("pop", url, state.id)

    assert_no_errors(reports)
    popped = [item["n"] for payload, _ in reports for item in payload]
    assert sorted(popped) == list(range(120))  # each item exactly once
    for payload, _ in reports:  # each worker saw the history shrink from its end
        assert [item["n"] for item in payload] == sorted((item["n"] for item in payload),
                                                         reverse=True)
    final = SessionState.get_by_id(state.id)
    assert final.conversation_history == [] and final.version == 121


# -- 3. append_messages from several processes ------------------------------------------------

def test_processes_appending_messages_keep_every_one(migrated, url):
    state = sessionstate.create_session("copilot")
    per_worker = 50

    reports = run_workers("append", url, state.id, per_worker)

    assert_no_errors(reports)
    versions = [version for payload, _ in reports for version in payload]
    assert sorted(versions) == list(range(2, 2 + WORKERS * per_worker))
    final = SessionState.get_by_id(state.id)
    history = final.conversation_history
    assert len(history) == WORKERS * per_worker
    tags = [(message["worker"], message["i"]) for message in history]
    assert sorted(tags) == [(w, i) for w in range(WORKERS) for i in range(per_worker)]
    for worker in range(WORKERS):
        own = [i for w, i in tags if w == worker]
        assert own == list(range(per_worker))  # each worker's messages in its own order
    assert final.version == 1 + WORKERS * per_worker
    assert sessionstate.recent_messages(state.id, 3) == history[-3:]


def test_processes_appending_and_modifying_one_state_lose_nothing(migrated, url):
    """modify_state writes context_variables, append_messages the history: both are kept."""
    state = sessionstate.create_session("copilot", context_variables={"counter": 0})
    per_worker = 50

    reports = run_workers("mixed", url, state.id, per_worker)

    assert_no_errors(reports)
    versions = [version for (_, payload), _ in reports for version in payload]
    assert sorted(versions) == list(range(2, 2 + WORKERS * per_worker))
    appenders = [index for index, ((what, _), _) in enumerate(reports) if what == "append"]
    modifiers = WORKERS - len(appenders)
    final = SessionState.get_by_id(state.id)
    assert final.context_variables == {"counter": modifiers * per_worker}
    tags = sorted((m["worker"], m["i"]) for m in final.conversation_history)
    assert tags == [(w, i) for w in appenders for i in range(per_worker)]
    assert final.version == 1 + WORKERS * per_worker


# -- a writer killed while others race with it ------------------------------------------------

def _victim(url, barrier, state_id, report_path):
    """Increment the counter with modify_state until killed, logging each committed version.

    Each line is one os.write() to an O_APPEND file, so a kill never leaves half a line.
    """
    sessionstate.connect(url)
    SessionState.get_by_id(state_id)
    report = os.open(report_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    barrier.wait(BARRIER_TIMEOUT)
    while True:
        try:
            line = b"%d\n" % sessionstate.modify_state(state_id, _increment)
        except Exception as exc:
            line = ("E %s\n" % _describe(exc)).encode()
        os.write(report, line)


VICTIM_COMMITS_BEFORE_KILL = 30


def _read_lines(path):
    return path.read_text().splitlines() if path.exists() else []


def test_writer_killed_among_racing_writers_loses_nothing_else(migrated, url, tmp_path):
    """A modify_state writer SIGKILLed mid-stream (perhaps holding the lock) stops no one."""
    state = sessionstate.create_session("copilot", context_variables={"counter": 0})
    per_worker = 100
    survivors = WORKERS - 1
    report_path = tmp_path / "victim.log"
    victim_exit = []

    def run_and_kill_victim(context, barrier):
        victim = context.Process(target=_victim, args=(url, barrier, state.id, report_path),
                                 name="victim", daemon=True)
        victim.start()
        deadline = time.monotonic() + RUN_TIMEOUT
        try:
            while len(_read_lines(report_path)) < VICTIM_COMMITS_BEFORE_KILL:
                assert victim.is_alive(), "the victim died on its own"
                assert time.monotonic() < deadline, "the victim stopped writing"
                time.sleep(0.005)
        finally:
            victim.kill()  # SIGKILL, in the middle of its stream
            victim.join(timeout=10)
            victim_exit.append(victim.exitcode)

    reports = run_workers("modify", url, state.id, per_worker, count=survivors,
                          alongside=run_and_kill_victim)

    assert_no_errors(reports)
    assert victim_exit == [-signal.SIGKILL]
    victim_lines = _read_lines(report_path)
    assert [line for line in victim_lines if line.startswith("E ")] == []
    reported = [int(line) for line in victim_lines]
    versions = [version for payload, _ in reports for version in payload] + reported
    assert len(set(versions)) == len(versions)  # no version handed out twice
    final = SessionState.get_by_id(state.id)
    # Every committed write is one increment and one version; the victim may have committed
    # one write it did not live to report.
    assert final.context_variables == {"counter": final.version - 1}
    assert final.version - 1 - len(versions) in (0, 1)
    assert set(versions) <= set(range(2, final.version + 1))
    assert final.version - 1 >= survivors * per_worker + VICTIM_COMMITS_BEFORE_KILL


# -- 5. a writer killed with SIGKILL mid-stream -----------------------------------------------

# The writer reports each version after its commit. "update": update_state with the version
# check writes {'n': k} (an autocommit UPDATE); plan_data carries the same k with padding, so
# a write spans several pages and a kill is likely to land inside one. "append":
# append_messages with expected_version appends {'k': k} (an explicit write transaction:
# BEGIN IMMEDIATE on SQLite, killed while holding the lock). Either way the data must agree
# with the version found afterwards.
WRITER = textwrap.dedent("""
    import sys
    import sessionstate
    from sessionstate import SessionState

    url, state_id, mode = sys.argv[1:4]
    sessionstate.connect(url)
    version = SessionState.get_by_id(state_id).version
    padding = "x" * 16000
    while True:
        k = version  # the version this write creates is k + 1
        if mode == "update":
            version = sessionstate.update_state(
                state_id, version, context_variables={"n": k},
                plan_data={"n": k, "pad": padding})
        else:
            version = sessionstate.append_messages(
                state_id, [{"k": k, "pad": padding[:400]}], expected_version=version)
        sys.stdout.write("%d\\n" % version)
        sys.stdout.flush()
""")
KILL_ROUNDS = 3
COMMITS_BEFORE_KILL = 40
WRITER_TIMEOUT = 60  # seconds before a writer that stopped reporting is killed anyway


def _kill_writer_mid_stream(url, state_id, mode, tmp_path, round_):
    """Start a writer, SIGKILL it once it has reported some commits; the last version seen."""
    stderr_path = tmp_path / ("writer-%s-%d.err" % (mode, round_))
    with open(stderr_path, "wb") as stderr:
        writer = subprocess.Popen([sys.executable, "-c", WRITER, url, state_id, mode],
                                  stdout=subprocess.PIPE, stderr=stderr, cwd=tmp_path)
    watchdog = threading.Timer(WRITER_TIMEOUT, writer.kill)
    watchdog.start()
    try:
        reported = []
        while len(reported) < COMMITS_BEFORE_KILL:
            line = writer.stdout.readline()
            if not line:
                break
            reported.append(int(line))
        assert len(reported) == COMMITS_BEFORE_KILL, (
            "the writer stopped after %d commits: %s"
            % (len(reported), stderr_path.read_text()[-2000:]))
        writer.send_signal(signal.SIGKILL)  # while it keeps writing
        # What it reported before dying is still in the pipe; a line is one small write(),
        # so it is never torn.
        reported += [int(line) for line in writer.stdout.read().splitlines()]
        writer.wait(timeout=10)
    finally:
        watchdog.cancel()
        if writer.poll() is None:
            writer.kill()
            writer.wait(timeout=10)
        writer.stdout.close()
    assert writer.returncode == -signal.SIGKILL
    assert reported == list(range(reported[0], reported[0] + len(reported)))
    return reported[-1]


def check_consistent(mode, state, version):
    """The state's data is exactly what `version` - 1 writes of `mode` produced."""
    if mode == "update":
        assert state.context_variables == {"n": version - 1}
        assert state.plan_data["n"] == version - 1
    else:
        assert [message["k"] for message in state.conversation_history] == list(range(1, version))
        assert sessionstate.recent_messages(state.id, 1) == state.conversation_history[-1:]


@pytest.mark.parametrize("mode", ["update", "append"])
def test_writer_killed_mid_stream_leaves_a_consistent_database(backend, migrated, url, tmp_path,
                                                               mode):
    state = sessionstate.create_session("copilot", context_variables={"n": 0})
    migrated.close()
    last_version = 1

    for round_ in range(KILL_ROUNDS):
        last_reported = _kill_writer_mid_stream(url, state.id, mode, tmp_path, round_)
        assert last_reported > last_version

        database = sessionstate.connect(url)  # a fresh connection, as a restarted worker's
        try:
            if backend == "sqlite":
                assert database.execute_sql("PRAGMA integrity_check").fetchall() == [("ok",)]
                assert database.execute_sql("PRAGMA foreign_key_check").fetchall() == []
            found = SessionState.get_by_id(state.id)
            # Committed before it was reported, so never behind; at most the one commit the
            # writer made but did not live to report.
            assert last_reported <= found.version <= last_reported + 1
            check_consistent(mode, found, found.version)
            assert sessionstate.get_state(state.session_id).version == found.version
            assert Session.get_by_id(state.session_id).status == "active"
            last_version = found.version
        finally:
            database.close()

    # Nothing is left locked: an ordinary write goes through, and the data still agrees.
    database = sessionstate.connect(url)
    try:
        if mode == "update":
            assert sessionstate.update_state(state.id, last_version, context_variables={
                "n": last_version}, plan_data={"n": last_version}) == last_version + 1
        else:
            assert sessionstate.append_messages(state.id, [{"k": last_version}],
                                                expected_version=last_version) == last_version + 1
        check_consistent(mode, SessionState.get_by_id(state.id), last_version + 1)
    finally:
        database.close()
