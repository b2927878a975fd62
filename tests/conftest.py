"""Backend fixtures: every database test runs once per backend in SESSIONSTATE_TEST_BACKENDS.

The chain is backend -> url (an empty database of its own) -> db (connected, models bound)
-> migrated. SQLite databases are files under tmp_path, so subprocesses can open them too.
Each server backend gets one uniquely named database per test run, dropped at the end; each
test starts with it empty. A server that cannot be reached is skipped locally with a one-line
reason, and fails the run under CI (CI=true), where the server tests must really run.
"""

import asyncio
import os
import time
import uuid

import peewee as pw
import pytest

import sessionstate
from sessionstate import db as db_module
from sessionstate.models import database_proxy

# Run everything in a local time zone that is not UTC, so that no code can lean on it.
os.environ["TZ"] = "America/New_York"
time.tzset()

SERVER_URLS = {
    "postgresql": os.environ.get("SESSIONSTATE_TEST_POSTGRESQL",
                                 "postgresql://postgres@127.0.0.1:5432/test"),
    "mysql": os.environ.get("SESSIONSTATE_TEST_MYSQL", "mysql://root@127.0.0.1:3306/test"),
}
# The server session's zone during the tests: anything but UTC, so conversions are exercised.
SERVER_TIME_ZONE = {"postgresql": "Asia/Kolkata", "mysql": "+05:30"}
ALL_BACKENDS = ("sqlite", "postgresql", "mysql")
UNDER_CI = os.environ.get("CI", "").lower() == "true"
RUN_ID = uuid.uuid4().hex[:10]


def selected_backends():
    names = os.environ.get("SESSIONSTATE_TEST_BACKENDS", ",".join(ALL_BACKENDS))
    chosen = [name.strip() for name in names.split(",") if name.strip()]
    unknown = set(chosen) - set(ALL_BACKENDS)
    if unknown:
        raise pytest.UsageError("unknown backend(s) in SESSIONSTATE_TEST_BACKENDS: %s"
                                % ", ".join(sorted(unknown)))
    return chosen


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", selected_backends(), scope="session")


class ServerDatabase:
    """One throw-away database on a server for the whole run, emptied before each test."""

    def __init__(self, family):
        self.family = family
        self.admin_url = SERVER_URLS[family]
        self.name = "sessionstate_test_%s" % RUN_ID
        base, _, _ = self.admin_url.rpartition("/")
        self.url = "%s/%s" % (base, self.name)

    def _admin(self):
        return db_module.open_database(self.admin_url)

    def create(self):
        admin = self._admin()
        with admin.connection_context():
            self.settings = self._global_settings(admin)
            admin.execute_sql("CREATE DATABASE %s" % self.name)
            if self.family == "postgresql":
                admin.execute_sql("ALTER DATABASE %s SET timezone TO '%s'"
                                  % (self.name, SERVER_TIME_ZONE["postgresql"]))
            # MariaDB has no per-database zone, and its global one is the machine's: clients
            # in another zone set their session's (tests/test_execution.py), the library its
            # own (+00:00).

    def empty(self):
        database = db_module.open_database(self.url)
        with database.connection_context():
            for table in ("session_states", "sessions", "migratehistory"):
                database.execute_sql("DROP TABLE IF EXISTS %s" % table)
        database.close()

    def _global_settings(self, admin):
        """The server-wide settings a run must leave as it found them (MariaDB's zone)."""
        if self.family != "mysql":
            return None
        return admin.execute_sql("SELECT @@global.time_zone").fetchone()[0]

    def drop(self):
        admin = self._admin()
        with admin.connection_context():
            assert self._global_settings(admin) == self.settings, (
                "the run changed the server's global settings")
            if self.family == "postgresql":
                admin.execute_sql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % self.name)
            else:
                admin.execute_sql("DROP DATABASE IF EXISTS %s" % self.name)


_servers = {}


@pytest.fixture(scope="session")
def server(backend):
    """The run's database on `backend`'s server (None for SQLite)."""
    if backend == "sqlite":
        yield None
        return
    database = ServerDatabase(backend)
    try:
        database.create()
    except (sessionstate.ConfigurationError, pw.DatabaseError) as exc:
        reason = "%s server unreachable at %s: %s" % (
            backend, db_module.mask_password(database.admin_url), str(exc).splitlines()[0])
        if UNDER_CI:
            pytest.fail("under CI the server tests must run: " + reason, pytrace=False)
        pytest.skip(reason)
    yield database
    database.drop()


@pytest.fixture
def url(backend, server, tmp_path):
    """The URL of an empty database for this test alone."""
    if server is None:
        return "sqlite:///%s" % (tmp_path / "sessionstate.db")
    server.empty()
    return server.url


@pytest.fixture
def db(url):
    """A connected database with the models bound to it (not migrated)."""
    database = sessionstate.connect(url)
    yield database
    database.close()


@pytest.fixture
def migrated(db):
    """A connected database migrated to the head."""
    sessionstate.migrate(db)
    return db


@pytest.fixture(autouse=True)
def _never_the_users_database(monkeypatch, tmp_path):
    """No test may touch ~/.sessionstate: point HOME and the URL variable elsewhere."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(db_module.ENV_VAR, raising=False)
    monkeypatch.setattr(database_proxy, "obj", None)


class AsyncAPI:
    """sessionstate's functions, run through sessionstate.aio on an event loop of its own.

    Stands in for the `sessionstate` module in the behaviour tests (the `api` fixture): the
    same names, arguments, results and errors, awaited underneath.
    """

    def __init__(self, url):
        from sessionstate import aio

        self.aio = aio
        self.loop = asyncio.new_event_loop()
        self.database = self.loop.run_until_complete(aio.connect(url))

    def __getattr__(self, name):
        if name not in self.aio.__all__:
            return getattr(sessionstate, name)  # errors, models...
        coroutine_function = getattr(self.aio, name)

        def call(*args, **kwargs):
            return self.loop.run_until_complete(coroutine_function(*args, **kwargs))
        return call

    def close(self):
        self.loop.run_until_complete(self.aio.close())
        self.loop.close()


@pytest.fixture(params=["sync", "async"])
def api(request, migrated, url):
    """The public functions: the sync module, or the same through sessionstate.aio."""
    if request.param == "sync":
        yield sessionstate
        return
    facade = AsyncAPI(url)
    yield facade
    facade.close()
