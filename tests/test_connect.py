"""connect(): which URL, which SQLite file, which connection settings, which refusals.

These tests need no server, except the few at the end that take the `url` fixture (marked
"server" in their names); those run once per backend and skip an unreachable server.
The conftest points HOME at a temporary folder and removes SESSIONSTATE_DATABASE_URL.
"""

import os
import sqlite3
import threading
from pathlib import Path

import peewee as pw
from playhouse import pool as playhouse_pool
import pytest

import sessionstate
from sessionstate import ConfigurationError, Session, SessionState, SessionStateError
from sessionstate import dialects
from sessionstate import db as db_module
from sessionstate.db import ENV_VAR, mask_password

SPEC_INDEXES = {
    "idx_session_states_session_id",
    "idx_session_states_status",
    "idx_session_states_session_status",
    "idx_session_states_mode",
    "idx_session_states_updated",
}


def sqlite_url(path):
    return "sqlite:///" + str(path)


def home():
    return Path(os.environ["HOME"])


def pragma(database, name):
    return database.execute_sql("PRAGMA %s" % name).fetchone()[0]


# --- where the URL comes from ------------------------------------------------------------------


def test_the_argument_wins_over_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, sqlite_url(tmp_path / "from_env.db"))
    database = sessionstate.connect(sqlite_url(tmp_path / "from_arg.db"))
    assert database.database == str(tmp_path / "from_arg.db")
    assert not (tmp_path / "from_env.db").exists()
    assert not (home() / ".sessionstate").exists()


def test_the_environment_wins_over_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, sqlite_url(tmp_path / "from_env.db"))
    database = sessionstate.connect()
    assert database.database == str(tmp_path / "from_env.db")
    assert not (home() / ".sessionstate").exists()


def test_the_default_is_a_file_under_home_created_on_demand():
    folder = home() / ".sessionstate"
    assert not folder.exists()
    database = sessionstate.connect()
    assert database.database == str(folder / "sessionstate.db")
    assert folder.is_dir()
    sessionstate.migrate(database)
    assert (folder / "sessionstate.db").is_file()
    assert {"sessions", "session_states"} <= set(database.get_tables())
    database.close()


def test_an_empty_environment_variable_means_the_default(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "")
    assert sessionstate.connect().database == str(home() / ".sessionstate" / "sessionstate.db")


def test_get_database_before_connect_connects_to_the_default():
    database = sessionstate.get_database()
    assert database.database == str(home() / ".sessionstate" / "sessionstate.db")
    assert sessionstate.get_database() is database


def test_connect_binds_the_models_to_the_new_database(tmp_path):
    first = sessionstate.connect(sqlite_url(tmp_path / "first.db"))
    sessionstate.migrate(first)
    Session.create(name="in the first")
    second = sessionstate.connect(sqlite_url(tmp_path / "second.db"))
    sessionstate.migrate(second)
    assert sessionstate.get_database() is second
    assert sessionstate.get_database() is second
    assert Session.select().count() == 0
    first.close()
    second.close()


# --- SQLite URL forms ----------------------------------------------------------------------------


def test_sqlite_relative_path_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    monkeypatch.chdir(work)
    database = sessionstate.connect("sqlite:///data/relative.db")
    assert database.database == "data/relative.db"
    sessionstate.migrate(database)
    assert (work / "data" / "relative.db").is_file()
    assert not (tmp_path / "data").exists()
    database.close()


def test_sqlite_relative_file_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    database = sessionstate.connect("sqlite:///here.db")
    sessionstate.migrate(database)
    assert (tmp_path / "here.db").is_file()
    database.close()


def test_sqlite_absolute_path_takes_four_slashes(tmp_path, monkeypatch):
    target = tmp_path / "absolute" / "state.db"
    target.parent.mkdir()
    url = sqlite_url(target)
    assert url.startswith("sqlite:////")
    monkeypatch.chdir(tmp_path)  # anywhere: the path does not depend on it
    database = sessionstate.connect(url)
    assert database.database == str(target)
    sessionstate.migrate(database)
    assert target.is_file()
    database.close()


def test_sqlite_memory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    database = sessionstate.connect("sqlite:///:memory:")
    assert database.database == ":memory:"
    sessionstate.migrate(database)
    assert {"sessions", "session_states", "migratehistory"} <= set(database.get_tables())
    session = Session.create(name="memory")
    SessionState.create_for_session(session.id, "copilot").save()
    assert SessionState.select().count() == 1
    assert pragma(database, "foreign_keys") == 1
    assert list(tmp_path.iterdir()) == []
    database.close()


# --- SQLite connection settings ------------------------------------------------------------------


def test_sqlite_connection_settings(tmp_path):
    database = sessionstate.connect(sqlite_url(tmp_path / "settings.db"))
    for attempt in range(2):  # the first connection, then a fresh one after close()
        assert pragma(database, "foreign_keys") == 1
        assert pragma(database, "journal_mode").lower() == "wal"
        assert pragma(database, "busy_timeout") >= 5000
        database.close()


def test_sqlite_settings_hold_on_other_threads(tmp_path):
    database = sessionstate.connect(sqlite_url(tmp_path / "threads.db"))
    found = {}

    def look():
        found["foreign_keys"] = pragma(database, "foreign_keys")
        found["busy_timeout"] = pragma(database, "busy_timeout")
        found["journal_mode"] = pragma(database, "journal_mode").lower()
        database.close()

    worker = threading.Thread(target=look)
    worker.start()
    worker.join()
    assert found["foreign_keys"] == 1
    assert found["busy_timeout"] >= 5000
    assert found["journal_mode"] == "wal"


def test_wal_is_recorded_in_the_file(tmp_path):
    path = tmp_path / "wal.db"
    database = sessionstate.connect(sqlite_url(path))
    sessionstate.migrate(database)
    database.close()
    with sqlite3.connect(path) as plain:  # another client, without our settings
        assert plain.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"


def test_cascade_works_because_foreign_keys_are_on(tmp_path):
    database = sessionstate.connect(sqlite_url(tmp_path / "cascade.db"))
    sessionstate.migrate(database)
    session = Session.create(name="s")
    SessionState.create_for_session(session.id, "copilot").save()
    database.close()  # a new connection must have foreign keys on again
    database.execute_sql("DELETE FROM sessions")
    assert SessionState.select().count() == 0
    database.close()


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("url, words", [
    ("oracle://user@host/db", ["scheme", "'oracle'"]),
    ("not a url", ["scheme"]),
    ("://nothing", ["scheme"]),
    ("postgresql://host", ["no database name"]),
    ("postgresql://host/", ["no database name"]),
    ("mysql://host", ["no database name"]),
    ("postgresql://user:hunter2@host:abc/db", ["port"]),
    ("mysql://user:hunter2@host:99999/db", ["port"]),
    ("oracle://user:hunter2@host/db", ["scheme"]),
])
def test_unusable_urls_raise_configuration_error(url, words):
    with pytest.raises(ConfigurationError) as error:
        sessionstate.connect(url)
    message = str(error.value)
    for word in words:
        assert word.lower() in message.lower(), message
    assert "hunter2" not in message
    assert isinstance(error.value, SessionStateError)


def test_a_missing_folder_is_named(tmp_path):
    missing = tmp_path / "no" / "such" / "folder"
    with pytest.raises(ConfigurationError) as error:
        sessionstate.connect(sqlite_url(missing / "state.db"))
    assert str(missing) in str(error.value)
    assert "does not exist" in str(error.value)
    assert not (tmp_path / "no").exists()  # refused, not created


def test_a_missing_relative_folder_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match="nope"):
        sessionstate.connect("sqlite:///nope/state.db")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", [42, b"sqlite:///x.db"])
def test_a_url_that_is_not_a_string_is_refused(url):
    with pytest.raises(ConfigurationError, match="string"):
        sessionstate.connect(url)


def test_a_missing_driver_names_the_extra_to_install(monkeypatch):
    monkeypatch.setattr(dialects.PostgresqlDialect, "driver",
                        ("no_such_driver_module", "sessionstate[postgres]"))
    with pytest.raises(ConfigurationError) as error:
        sessionstate.connect("postgresql://user:hunter2@host/db")
    assert "pip install 'sessionstate[postgres]'" in str(error.value)
    assert "hunter2" not in str(error.value)


def test_a_refused_url_leaves_the_previous_binding(tmp_path):
    database = sessionstate.connect(sqlite_url(tmp_path / "kept.db"))
    with pytest.raises(ConfigurationError):
        sessionstate.connect("oracle://host/db")
    assert sessionstate.get_database() is database
    assert sessionstate.get_database() is database


# --- mask_password ---------------------------------------------------------------------------


@pytest.mark.parametrize("url, shown", [
    ("postgresql://user:s3cret@db.example:5432/app", "postgresql://user:***@db.example:5432/app"),
    ("mysql://root:p%40ss@127.0.0.1/app", "mysql://root:***@127.0.0.1/app"),
    ("postgresql://user:a:b@host/app", "postgresql://user:***@host/app"),
    ("postgresql://same:same@host/app", "postgresql://same:***@host/app"),
    ("postgresql://user@host/app", "postgresql://user@host/app"),
    ("postgresql://host/app", "postgresql://host/app"),
    ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ("not a url", "not a url"),
])
def test_mask_password(url, shown):
    assert mask_password(url) == shown


# --- against each backend's server (skipped when one is unreachable) ---------------------------


def test_server_connect_gives_the_database_class_of_the_url(url, backend):
    database = sessionstate.connect(url)
    expected = {"sqlite": pw.SqliteDatabase, "postgresql": pw.PostgresqlDatabase,
                "mysql": pw.MySQLDatabase}[backend]
    assert isinstance(database, expected)
    assert dialects.of(database).name == backend
    assert sessionstate.get_database() is database
    assert db_module.get_database() is database
    sessionstate.migrate(database)
    assert SPEC_INDEXES <= {index.name for index in database.get_indexes("session_states")}
    database.close()


def test_server_mariadb_sessions_run_in_utc(url, backend):
    if backend != "mysql":
        pytest.skip("MariaDB only")
    database = sessionstate.connect(url)
    assert database.execute_sql("SELECT @@session.time_zone").fetchone()[0] == "+00:00"
    database.close()


def test_server_environment_variable_selects_the_server(url, monkeypatch):
    monkeypatch.setenv(ENV_VAR, url)
    database = sessionstate.connect()
    sessionstate.migrate(database)
    assert {"sessions", "session_states"} <= set(database.get_tables())
    database.close()


def test_pool_url_variants_work_end_to_end(url, backend):
    scheme, rest = url.split("://", 1)
    database = sessionstate.connect("%s+pool://%s" % (scheme, rest))
    assert isinstance(database, playhouse_pool.PooledDatabase)
    assert dialects.of(database).name == backend
    sessionstate.migrate(database)
    state = sessionstate.create_session("copilot", conversation_history=[{"n": 1}])
    assert sessionstate.append_messages(state.id, [{"n": 2}]) == 2
    assert sessionstate.get_state(state.session_id).conversation_history == [{"n": 1}, {"n": 2}]
    database.close_all()


@pytest.mark.parametrize("url", ["sqlite:relative.db", "sqlite://host/path.db"])
def test_sqlite_urls_without_three_slashes_are_refused(url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match="three slashes"):
        sessionstate.connect(url)
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_postgresql_server_is_database_unavailable():
    with pytest.raises(sessionstate.DatabaseUnavailable, match="cannot open the database"):
        sessionstate.connect("postgresql://postgres@127.0.0.1:1/nothing")
