"""The private database servers of tests/instances.py: start, stop, crash, restart, clean up.

Each server gets one instance for the module; the tests stop and start it, so each test first
makes sure it runs. Locally a server whose binaries are missing is skipped; under CI (CI=true)
that fails the run instead.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from urllib.parse import urlsplit

import pytest

from instances import (InstanceError, MariaDBInstance, PostgresInstance, _ephemeral_range,
                       _pid_alive, reap_stale_instances)

UNDER_CI = os.environ.get("CI", "").lower() == "true"
SHARED_PORTS = {5432, 3306}


def _require(cls):
    reason = cls.unavailable_reason()
    if reason:
        message = "%s instances cannot run here: %s" % (cls.kind, reason)
        if UNDER_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def connect(instance):
    """A DB-API connection (autocommit) made from instance.url alone, failing fast."""
    parts = urlsplit(instance.url)
    if isinstance(instance, PostgresInstance):
        import psycopg
        return psycopg.connect(instance.url, connect_timeout=3, autocommit=True)
    import pymysql
    return pymysql.connect(host=parts.hostname, port=parts.port, user=parts.username,
                           password=parts.password or "", database=parts.path.lstrip("/"),
                           connect_timeout=3, autocommit=True)


def connection_error(instance):
    if isinstance(instance, PostgresInstance):
        import psycopg
        return psycopg.OperationalError
    import pymysql
    return pymysql.err.OperationalError


def query(instance, sql, *params):
    conn = connect(instance)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params or None)
            return [tuple(row) for row in cur.fetchall()] if cur.description else None
    finally:
        conn.close()


def write_token(instance):
    """A committed row with a fresh token, to look for after the server went down."""
    query(instance, "CREATE TABLE IF NOT EXISTS survivors (token VARCHAR(40) PRIMARY KEY)")
    token = uuid.uuid4().hex
    query(instance, "INSERT INTO survivors (token) VALUES (%s)", token)
    return token


def has_token(instance, token):
    return query(instance, "SELECT token FROM survivors WHERE token = %s", token) == [(token,)]


@pytest.fixture(scope="module", params=[PostgresInstance, MariaDBInstance],
                ids=["postgresql", "mariadb"])
def module_instance(request):
    _require(request.param)
    with request.param() as instance:
        yield instance


@pytest.fixture
def instance(module_instance):
    """The module's instance, running: an earlier test may have left it stopped."""
    return module_instance.start()


def test_select_1_on_a_server_of_its_own(instance):
    assert instance.running
    parts = urlsplit(instance.url)
    assert parts.hostname == "127.0.0.1" and parts.port == instance.port
    assert instance.port not in SHARED_PORTS
    assert instance.port < _ephemeral_range()[0]     # see free_port()
    assert query(instance, "SELECT 1") == [(1,)]
    # It is this instance's data folder that answers, not the machine's shared server.
    if isinstance(instance, PostgresInstance):
        assert query(instance, "SHOW data_directory") == [(instance.datadir,)]
    else:
        (datadir,), = query(instance, "SELECT @@datadir")
        assert datadir.rstrip("/") == instance.datadir
        assert query(instance, "SELECT DATABASE(), @@character_set_database") \
            == [("test", "utf8mb4")]


@pytest.mark.parametrize("mode", ["fast", "immediate", "kill"])
def test_stopped_server_refuses_and_comes_back_with_its_data(instance, mode):
    token = write_token(instance)
    pid, url = instance.pid, instance.url
    instance.stop(mode)
    assert not instance.running and instance.pid is None
    assert not _pid_alive(pid)
    with pytest.raises(connection_error(instance)):
        connect(instance).close()
    instance.stop(mode)                       # stopping a stopped server is a no-op

    instance.start()
    assert instance.running and instance.pid != pid
    assert instance.url == url
    assert query(instance, "SELECT 1") == [(1,)]
    assert has_token(instance, token)


def test_restart_keeps_port_and_data(instance):
    token = write_token(instance)
    pid, url = instance.pid, instance.url
    assert instance.restart() is instance
    assert instance.running and instance.pid != pid and not _pid_alive(pid)
    assert instance.url == url
    assert has_token(instance, token)
    instance.restart(mode="immediate")
    assert has_token(instance, token)


def test_start_on_a_running_server_is_a_no_op(instance):
    pid = instance.pid
    assert instance.start() is instance
    assert instance.pid == pid


def test_stop_rejects_an_unknown_mode(instance):
    with pytest.raises(ValueError):
        instance.stop("gently")
    assert instance.running


@pytest.mark.parametrize("cls", [PostgresInstance, MariaDBInstance],
                         ids=["postgresql", "mariadb"])
def test_context_manager_leaves_no_process_and_no_folder(cls):
    _require(cls)
    with cls() as instance:
        pid, base_dir = instance.pid, instance.base_dir
        assert _pid_alive(pid) and os.path.isdir(base_dir)
        assert query(instance, "SELECT 1") == [(1,)]
    assert not _pid_alive(pid)
    assert not os.path.exists(base_dir)
    assert instance.pid is None
    instance.cleanup()                        # a second clean-up is harmless
    with pytest.raises(InstanceError):
        instance.start()


def test_failed_start_says_why_and_leaves_nothing_running(instance):
    """A server that will not start: InstanceError with the log's tail; then it starts again."""
    good_args = instance.server_args
    bad_args, bad_name = ((["-c", "no_such_setting=1"], "no_such_setting")
                          if isinstance(instance, PostgresInstance)
                          else (["--no-such-option=1"], "no-such-option"))
    instance.stop()
    instance.server_args = good_args + bad_args
    try:
        with pytest.raises(InstanceError) as caught:
            instance.start()
        message = str(caught.value)
        assert "did not start" in message and "log tail" in message and bad_name in message
        assert not instance.running
        with pytest.raises(connection_error(instance)):
            connect(instance).close()
    finally:
        instance.server_args = good_args
    assert instance.start().running
    assert query(instance, "SELECT 1") == [(1,)]


_ORPHAN_SCRIPT = """
import json, os, signal, sys
sys.path.insert(0, sys.argv[1])
import instances
instance = getattr(instances, sys.argv[2])().start()
print(json.dumps({"pid": instance.pid, "base_dir": instance.base_dir}), flush=True)
if sys.argv[3] == "sigkill":
    os.kill(os.getpid(), signal.SIGKILL)    # no atexit, no clean-up: an orphan is left
"""


def _run_owner(cls, ending):
    result = subprocess.run([sys.executable, "-c", _ORPHAN_SCRIPT, os.path.dirname(__file__),
                             cls.__name__, ending], capture_output=True, text=True, timeout=60)
    lines = result.stdout.strip().splitlines()
    assert lines, "the owner process printed nothing: %s" % result.stderr
    return json.loads(lines[-1])


@pytest.mark.parametrize("cls", [PostgresInstance, MariaDBInstance],
                         ids=["postgresql", "mariadb"])
def test_an_owner_that_exits_without_cleaning_up_leaves_nothing(cls):
    _require(cls)
    left = _run_owner(cls, "exit")          # the atexit hook must clean up
    assert not _pid_alive(left["pid"])
    assert not os.path.exists(left["base_dir"])


@pytest.mark.parametrize("cls", [PostgresInstance, MariaDBInstance],
                         ids=["postgresql", "mariadb"])
def test_the_server_of_a_killed_owner_is_reaped(cls):
    _require(cls)
    left = _run_owner(cls, "sigkill")
    try:
        assert _pid_alive(left["pid"]) and os.path.isdir(left["base_dir"])
        assert left["base_dir"] in reap_stale_instances()
        assert not _pid_alive(left["pid"])
        assert not os.path.exists(left["base_dir"])
    finally:
        if _pid_alive(left["pid"]):
            os.kill(left["pid"], signal.SIGKILL)
        shutil.rmtree(left["base_dir"], ignore_errors=True)
