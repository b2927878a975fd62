"""Workers that outlive their connections: dropped connections, servers down, forked children.

Against the shared servers only the library's own connections are ended (from another
connection, as an administrator would); stopping a server happens on a private instance
(tests/instances.py), never on the shared ones.
"""

import os
import subprocess
import sys
import threading
import time

import pytest

import sessionstate as ss
from instances import PostgresInstance
from sessionstate import db as db_module
from conftest import UNDER_CI

SERVERS = ("postgresql", "mysql")
HANG_BOUND = 60  # seconds: only to detect a hang, never a speed target


def server_only(backend):
    if backend not in SERVERS:
        pytest.skip("SQLite has no connection to lose")


def end_library_connections(url, backend):
    """End every other connection to the test's database, and wait until they are gone."""
    admin = db_module.open_database(url)
    with admin.connection_context():
        if backend == "postgresql":
            others = ("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                      "AND pid <> pg_backend_pid() AND backend_type = 'client backend'")
            ended = [row[0] for row in admin.execute_sql(others).fetchall()]
            for pid in ended:
                admin.execute_sql("SELECT pg_terminate_backend(%s)", (pid,))
        else:
            others = ("SELECT id FROM information_schema.processlist WHERE db = DATABASE() "
                      "AND id <> CONNECTION_ID()")
            ended = [row[0] for row in admin.execute_sql(others).fetchall()]
            for pid in ended:
                admin.execute_sql("KILL CONNECTION %s" % int(pid))
        deadline = time.monotonic() + HANG_BOUND
        while set(ended) & {row[0] for row in admin.execute_sql(others).fetchall()}:
            assert time.monotonic() < deadline, "connections did not end"
            time.sleep(0.02)
    admin.close()
    return len(ended)


def pool_url(url):
    scheme, rest = url.split("://", 1)
    return "%s+pool://%s" % (scheme, rest)


@pytest.mark.parametrize("pooled", [False, True], ids=["plain", "pool"])
def test_after_an_idle_kill_every_call_works_in_every_thread(backend, url, pooled):
    server_only(backend)
    database = ss.connect(pool_url(url) if pooled else url)
    ss.migrate(database)
    states = [ss.create_session("copilot", context_variables={"n": 0}) for _ in range(3)]
    outcomes = {}

    def calls(index, state):
        """Read, update, append, modify, list: each must work on a fresh connection."""
        got = ss.get_state(state.session_id)
        version = ss.update_state(state.id, got.version, current_step=index)
        version = ss.append_messages(state.id, [{"i": index}], expected_version=version)
        version = ss.modify_state(state.id, lambda s: {"context_variables": {"n": 1}})
        assert ss.recent_messages(state.id, 1) == [{"i": index}]
        assert any(row["state_id"] == state.id for row in ss.list_sessions())
        return version

    def in_thread(index, state, barrier):
        try:
            calls(index, state)  # this thread's own connection is open
            barrier.wait(HANG_BOUND)  # ...then ended from outside
            barrier.wait(HANG_BOUND)
            outcomes[index] = calls(index, state)
        except Exception as exc:  # noqa: BLE001 - reported below
            outcomes[index] = exc

    barrier = threading.Barrier(len(states) + 1)
    threads = [threading.Thread(target=in_thread, args=(index, state, barrier))
               for index, state in enumerate(states)]
    for thread in threads:
        thread.start()
    barrier.wait(HANG_BOUND)
    assert end_library_connections(url, backend) >= len(states)
    barrier.wait(HANG_BOUND)
    for thread in threads:
        thread.join(HANG_BOUND)
    assert outcomes == {index: 7 for index in range(len(states))}, outcomes  # 1 + 2 x 3 writes
    assert ss.get_state(states[0].session_id).version == 7  # from the main thread, too
    database.close_all() if pooled else database.close()


def _held_lock(url, backend):
    """An administrator's connection holding a lock on session_states that blocks reads."""
    admin = db_module.open_database(url)
    admin.connect()
    admin.execute_sql("BEGIN" if backend == "postgresql" else "SET autocommit = 0")
    if backend == "postgresql":
        admin.execute_sql("LOCK TABLE session_states IN ACCESS EXCLUSIVE MODE")
    else:
        admin.execute_sql("LOCK TABLES session_states WRITE")
    return admin


def _release(admin, backend):
    admin.execute_sql("ROLLBACK" if backend == "postgresql" else "UNLOCK TABLES")
    admin.close()


def _waiting_library_connections(url, backend):
    probe = db_module.open_database(url)
    with probe.connection_context():
        if backend == "postgresql":
            sql = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                   "AND wait_event_type = 'Lock'")
        else:
            sql = ("SELECT count(*) FROM information_schema.processlist WHERE db = DATABASE() "
                   "AND state LIKE '%%lock%%'")
        count = probe.execute_sql(sql).fetchone()[0]
    probe.close()
    return count


def _during_a_long_call(url, backend, call):
    """Run `call` while a lock holds it up, end its connection, return what it gave or raised."""
    admin = _held_lock(url, backend)
    outcome = {}

    def run():
        try:
            outcome["value"] = call()
        except Exception as exc:  # noqa: BLE001 - returned to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + HANG_BOUND
    while not _waiting_library_connections(url, backend):
        assert time.monotonic() < deadline and thread.is_alive(), outcome
        time.sleep(0.02)
    killer = db_module.open_database(url)
    with killer.connection_context():
        if backend == "postgresql":
            killer.execute_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                               "datname = current_database() AND wait_event_type = 'Lock'")
        else:
            rows = killer.execute_sql(
                "SELECT id FROM information_schema.processlist WHERE db = DATABASE() "
                "AND state LIKE '%%lock%%'").fetchall()
            for (pid,) in rows:
                killer.execute_sql("KILL CONNECTION %s" % int(pid))
    killer.close()
    time.sleep(0.2)  # let the retried read queue up behind the lock again, if it does
    _release(admin, backend)
    thread.join(HANG_BOUND)
    assert not thread.is_alive()
    return outcome


def test_a_read_that_loses_its_connection_mid_call_is_retried(backend, url):
    server_only(backend)
    ss.migrate(ss.connect(url))
    state = ss.create_session("copilot", conversation_history=[{"n": 1}])
    outcome = _during_a_long_call(url, backend, lambda: ss.get_state(state.session_id))
    assert "value" in outcome, outcome
    assert outcome["value"].conversation_history == [{"n": 1}]


def test_a_write_that_loses_its_connection_mid_call_is_in_doubt_never_repeated(backend, url):
    server_only(backend)
    ss.migrate(ss.connect(url))
    state = ss.create_session("copilot")
    outcome = _during_a_long_call(
        url, backend, lambda: ss.append_messages(state.id, [{"n": 1}], expected_version=1))
    error = outcome.get("error")
    if error is not None:  # the usual case: the statement was sent when the connection died
        assert isinstance(error, ss.ConnectionLost) and error.in_doubt, outcome
        assert "may or may not have been applied" in str(error)
        assert error.__cause__ is not None
    after = ss.get_state(state.session_id)  # the next call works
    assert len(after.conversation_history) == after.version - 1 <= 1  # at most once
    assert after.version == (2 if "value" in outcome else after.version)


def test_a_server_that_is_down_is_database_unavailable_until_it_is_back(tmp_path):
    if not PostgresInstance.is_available():
        if UNDER_CI:
            pytest.fail("PostgreSQL binaries missing under CI")
        pytest.skip(PostgresInstance.unavailable_reason())
    with PostgresInstance() as server:
        database = ss.connect(server.url.replace("postgres@", "postgres:hunter22@"))
        ss.migrate(database)
        state = ss.create_session("copilot")
        server.stop()
        for call in (lambda: ss.get_state(state.session_id),
                     lambda: ss.update_state(state.id, 1, current_step=1),
                     lambda: ss.create_session("copilot")):
            started = time.monotonic()
            with pytest.raises(ss.DatabaseUnavailable) as error:
                call()
            assert time.monotonic() - started < HANG_BOUND
            assert "hunter22" not in str(error.value)
        result = subprocess.run(
            [sys.executable, "-m", "sessionstate", "--database", server.url.replace(
                "postgres@", "postgres:hunter22@"), "list"],
            capture_output=True, text=True, timeout=HANG_BOUND)
        assert result.returncode == 1
        assert result.stderr.startswith("sessionstate: error: cannot open the database")
        assert result.stderr.count("\n") == 1 and "hunter22" not in result.stderr
        server.start()
        assert ss.update_state(state.id, 1, current_step=1) == 2  # the same worker, no restart
        assert ss.get_state(state.session_id).current_step == 1
        database.close()


def test_a_forked_child_never_uses_its_parents_connection(backend, url):
    server_only(backend)
    database = ss.connect(url)
    ss.migrate(database)
    state = ss.create_session("copilot")
    backend_id = ("SELECT pg_backend_pid()" if backend == "postgresql"
                  else "SELECT CONNECTION_ID()")
    mine = database.execute_sql(backend_id).fetchone()[0]
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the child: its own connection, and its writes land
        try:
            version = ss.update_state(state.id, 1, current_step=5)
            theirs = ss.get_database().execute_sql(backend_id).fetchone()[0]
            os.write(writer, ("%s %s" % (version, theirs)).encode())
        finally:
            os._exit(0)
    os.close(writer)
    _, status = os.waitpid(child, 0)
    reply = os.read(reader, 100).decode().split()
    os.close(reader)
    assert status == 0 and reply[0] == "2"
    assert int(reply[1]) != mine
    assert database.execute_sql(backend_id).fetchone()[0] == mine  # the parent's is intact
    assert ss.get_state(state.session_id).current_step == 5
    database.close()
