"""The command line, run as an operator runs it: `python -m sessionstate` in a subprocess.

Each invocation costs a process start, so independent invocations run concurrently
(run_many) and the per-backend tests follow one operator's session through many commands.
"""

import json
import os
import subprocess
import sys
import unicodedata

import pytest

import sessionstate as ss
from sessionstate import Session, SessionState, transfer
from sessionstate import db as db_module
from sessionstate.errors import InvalidExport
from sessionstate.migrate import available

PASSWORD = "s3cret-pw"


def command(*args, url=None):
    return [sys.executable, "-m", "sessionstate"] + (["--database", url] if url else []) + [
        str(arg) for arg in args]


def run(*args, url=None):
    return run_many([command(*args, url=url)])[0]


def run_many(commands, env=None):
    """Start every command at once, then collect them: (returncode, stdout, stderr) each."""
    processes = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, encoding="utf-8", env=env) for argv in commands]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        results.append((process.returncode, out, err))
    return results


def ok(result):
    code, out, err = result
    assert (code, err) == (0, ""), err
    return out


def failed(result, *fragments, code=1):
    """An error: the exit status, nothing on stdout, one line on stderr naming the problem."""
    status, out, err = result
    assert status == code, (status, out, err)
    assert out == ""
    if code == 1:
        assert len(err.splitlines()) == 1 and err.startswith("sessionstate: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


def snapshot(database):
    """Every row of both tables, to show that a command changed nothing (or put it back)."""
    return [sorted(map(repr, database.execute_sql("SELECT * FROM %s ORDER BY id" % table)))
            for table in ("sessions", "session_states")]


def display_width(text):
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def make_sessions():
    """What a worker script would leave behind: four sessions in different situations."""
    rich = ss.create_session(
        "copilot", name="Café 日本 report", user_id="alice", ttl=3600,
        meta={"z": 1, "a": [1.5, None, True, "ü"]},
        conversation_history=[{"role": "user", "content": "hi\nthere"}],
        context_variables={"k": "v", "n": 2**40}, plan_data={"steps": [1, 2]})
    ss.append_messages(rich.id, [{"role": "assistant", "content": "hello"}])
    ss.modify_state(rich.id, lambda state: {"current_step": 7, "current_phase": "exec"})
    # A second, older-mode state of the same session.
    SessionState.create_for_session(rich.session_id, "planning-control",
                                    plan_data=[{"deep": {"x": [0.1, -3]}}]).save()
    done = ss.create_session("planning-control", name="b\tweird", user_id="bob")
    ss.complete(done.session_id)
    due = ss.create_session("hitl-interactive", user_id="bob", ttl=0.001)
    live = ss.create_session("copilot", user_id="carol")
    return rich.session_id, done.session_id, due.session_id, live.session_id


# -- an operator's session, on every backend ------------------------------------------------

def test_migrate_list_show_export_import_expire_purge(db, url, tmp_path):
    assert ok(run("migrate", url=url)) == "applied: %s\n" % ", ".join(available())
    rich, done, due, live = make_sessions()
    export_file = tmp_path / "rich.json"
    table, completed, bob, shown, exported = run_many([
        command("list", url=url),
        command("list", "--json", "--status", "completed", url=url),
        command("list", "--json", "--user", "bob", "--mode", "hitl-interactive", "--limit", 1,
                url=url),
        command("show", rich, "--database", url),  # global options also after the command
        command("export", rich, "-o", export_file, url=url),
    ])

    table = ok(table)
    lines = table.splitlines()
    assert lines[0].split() == ["SESSION", "NAME", "USER", "MODE", "STATUS", "PHASE", "STEP",
                                "VERSION", "UPDATED", "(UTC)"]
    assert [line.split()[0] for line in lines[1:]] == [live, due, done, rich]  # newest first
    assert "b\\tweird" in table and "Café 日本 report" in table  # escaped, never split
    # Aligned: the STATUS and UPDATED columns start at the same display position everywhere.
    header = lines[0]
    for row, status in zip(lines[1:], ["active", "active", "completed", "active"]):
        assert display_width(row[:row.index("  %s  " % status) + 2]) == display_width(
            header[:header.index("STATUS")]), table
        assert display_width(row) - len("2024-01-01 00:00:00") == display_width(
            header[:header.index("UPDATED")]), table

    completed = json.loads(ok(completed))
    assert [(row["session_id"], row["status"], row["user_id"]) for row in completed] == [
        (done, "completed", "bob")]
    assert set(completed[0]) == {"session_id", "state_id", "name", "user_id", "mode", "status",
                                 "current_phase", "current_step", "version", "updated_at"}
    assert [row["session_id"] for row in json.loads(ok(bob))] == [due]

    current = ss.get_state(rich)
    assert json.loads(ok(shown)) == current.to_dict()
    assert current.mode == "planning-control"  # the newest state is the current one

    assert ok(exported) == "exported session %s with 2 state(s) to %s\n" % (rich, export_file)
    text = export_file.read_text(encoding="utf-8")
    document = json.loads(text)
    assert document["format"] == "sessionstate-export" and document["format_version"] == 1
    first = next(s for s in document["states"] if s["mode"] == "copilot")
    assert first["version"] == 3 and first["current_step"] == 7
    assert first["conversation_history"][-1] == {"role": "assistant", "content": "hello"}
    assert first["created_at"].endswith("+00:00") and "." in first["created_at"]

    # Into another database: a SQLite file, so cross-backend for the servers.
    target = "sqlite:///%s" % (tmp_path / "target.db")
    ss.migrate(db_module.open_database(target))
    assert ok(run("import", export_file, url=target)) == (
        "imported session %s with 2 state(s)\n" % rich)
    again, round_trip = run_many([command("import", export_file, url=target),
                                  command("export", rich, url=target)])
    failed(again, "session %s already exists" % rich, "nothing imported")
    assert ok(round_trip) == text  # byte for byte: every column, timestamp and version

    # And back into this backend, after deleting the original: the same rows exactly.
    before = snapshot(db)
    assert ss.delete_session(rich)
    (tmp_path / "back.json").write_text(round_trip[1], encoding="utf-8")
    ok(run("import", tmp_path / "back.json", url=url))
    assert snapshot(db) == before

    # Housekeeping: expire what is due, then purge with a dry run first.
    assert ok(run("expire", url=url)) == "expired 1 session state(s)\n"
    assert ss.get_state(due).status == "expired"
    before = snapshot(db)
    dry = ok(run("purge", "--older-than", 0, "--dry-run", url=url)).splitlines()
    assert dry[0].startswith("dry run: would purge 2 session(s) completed or expired before ")
    assert sorted(dry[1:]) == sorted([done, due])
    assert snapshot(db) == before
    assert ok(run("purge", "--older-than", 0, url=url)).startswith("purged 2 session(s)")
    assert sorted(s.id for s in Session.select()) == sorted([rich, live])


# -- refusals on every backend: clear, one line, nothing written ----------------------------

def variant(document, path, change):
    """Write a changed copy of an export document to `path`; returns the path."""
    copy = json.loads(json.dumps(document))
    change(copy)
    path.write_text(json.dumps(copy), encoding="utf-8")
    return path


def test_unknown_ids_conflicts_and_broken_imports_write_nothing(migrated, url, tmp_path):
    rich = make_sessions()[0]
    document = transfer.export_session(rich)
    before = snapshot(migrated)

    def new_session_id(doc):
        doc["session"]["id"] = "new-session"
        for state in doc["states"]:
            state["session_id"] = "new-session"

    imports = {  # file -> what the message must name
        variant(document, tmp_path / "same.json", lambda d: None):
            "session %s already exists" % rich,
        # A new session id, but its states' ids are taken: a conflict found before writing.
        variant(document, tmp_path / "states.json", new_session_id):
            "session state(s) %s already exist" % ", ".join(
                sorted(state["id"] for state in document["states"])),
        variant(document, tmp_path / "format.json", lambda d: d.update(format="other")):
            "format: expected 'sessionstate-export'",
        variant(document, tmp_path / "type.json",
                lambda d: d["states"][1].update(current_step="7")):
            "states[1].current_step: must be an integer",
    }
    results = run_many(
        [command("show", "no-such-session", url=url),
         command("export", "no-such-session", "-o", tmp_path / "never.json", url=url)]
        + [command("import", path, url=url) for path in imports])
    failed(results[0], "no session with id 'no-such-session'")
    failed(results[1], "no session with id 'no-such-session'")
    assert not (tmp_path / "never.json").exists()
    for result, message in zip(results[2:], imports.values()):
        failed(result, message)
    assert snapshot(migrated) == before


def test_status_rollback_and_more_broken_imports(tmp_path):
    """The rest of the refusals, which do not depend on the backend: on a SQLite file."""
    url = "sqlite:///%s" % (tmp_path / "s.db")
    document = json.loads(json.dumps(GOOD))
    good = variant(document, tmp_path / "good.json", lambda d: None)
    failed(run("import", good, url=url), "not migrated", "sessionstate migrate")
    ok(run("migrate", url=url))
    (tmp_path / "text.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "latin1.json").write_bytes('{"name": "caf\xe9"}'.encode("latin-1"))
    imports = {
        tmp_path / "text.json": "the import file is not valid JSON",
        tmp_path / "latin1.json": "the import file is not UTF-8",
        tmp_path / "absent.json": "No such file or directory",
        variant(document, tmp_path / "missing.json", lambda d: d["states"][0].pop("version")):
            "states[0]: missing key(s): version",
        variant(document, tmp_path / "extra.json", lambda d: d["session"].update(extra=1)):
            "session: unexpected key(s): extra",
        variant(document, tmp_path / "naive.json",
                lambda d: d["states"][0].update(updated_at="2024-01-01T00:00:00")):
            "states[0].updated_at: must be an ISO 8601 timestamp with an offset",
        variant(document, tmp_path / "mode.json", lambda d: d["states"][0].update(mode="")):
            "states[0].mode: must be a non-empty string",
    }
    results = run_many([command("import", path, url=url) for path in imports])
    for result, message in zip(results, imports.values()):
        failed(result, message)
    assert ok(run("rollback", "--steps", 2, url=url)) == "rolled back: %s\n" % ", ".join(
        reversed(available()[-2:]))  # nothing was imported, so 002 drops an empty table
    assert ok(run("status", url=url)).splitlines() == (
        ["applied  %s" % n for n in available()[:-2]]
        + ["pending  %s" % n for n in available()[-2:]])


# -- database URLs and usage errors (backend-independent) -----------------------------------

def test_malformed_and_unusable_urls_are_one_line_with_the_password_masked(tmp_path):
    urls = {
        "postgresql://user:%s@localhost:notaport/db" % PASSWORD: "malformed database URL",
        "nosuchdb://user:%s@localhost/db" % PASSWORD: "unknown database URL scheme 'nosuchdb'",
        "sqlite:///%s/missing/folder/x.db" % tmp_path: "does not exist",
        "postgresql://user:%s@127.0.0.1:1/db" % PASSWORD: "cannot open the database",
        "just-some-text": "unknown database URL scheme ''",
    }
    results = run_many([command("status", url=url) for url in urls])
    for result, (url, message) in zip(results, urls.items()):
        err = failed(result, message)
        assert PASSWORD not in err
        if "user:" in err:
            assert "user:***@" in err
    assert not (tmp_path / "missing").exists()


def test_usage_errors_exit_2_and_the_environment_variable_is_used(tmp_path):
    database = tmp_path / "env.db"
    env = dict(os.environ, SESSIONSTATE_DATABASE_URL="sqlite:///%s" % database)
    results = run_many([
        command(),
        command("list", "--limit", 0),
        command("list", "--status", "zombie"),
        command("purge", "--dry-run"),
        command("--database", "", "status"),
        command("postgresql://user:%s@h/db" % PASSWORD, "list"),  # forgot --database
        command("migrate"),  # from the environment variable
        command("--debug", "--database", "nosuch://x", "status"),  # the traceback, exit 1
    ], env=env)
    for result in results[:6]:
        err = failed(result, "usage: sessionstate", code=2)
        assert PASSWORD not in err
    assert "--older-than" in results[3][2]
    assert "invalid choice" in results[5][2] and "user:***@" in results[5][2]
    assert ok(results[6]).startswith("applied: 001_")
    assert database.exists()
    code, out, err = results[7]
    assert code == 1 and "Traceback" in err
    assert err.rstrip().splitlines()[-1].startswith(
        "sessionstate.errors.ConfigurationError: unknown database URL scheme 'nosuch'")


# -- the export document, without a database ----------------------------------------------

def test_document_columns_are_every_column_of_both_tables():
    assert set(transfer.SESSION_COLUMNS) == {f.column_name for f in Session._meta.sorted_fields}
    assert set(transfer.STATE_COLUMNS) == {
        f.column_name for f in SessionState._meta.sorted_fields}


GOOD = {
    "format": "sessionstate-export",
    "format_version": 1,
    "session": {"id": "s1", "name": None, "user_id": "u", "status": "active", "meta": None,
                "created_at": "2024-05-01T12:00:00.000001+02:00",
                "last_active_at": "2024-05-01T10:00:00Z"},
    "states": [{"id": "t1", "session_id": "s1", "mode": "copilot",
                "conversation_history": [], "context_variables": {}, "plan_data": None,
                "current_phase": None, "current_step": -5, "status": "expired",
                "created_at": None, "updated_at": "2024-05-01T10:00:00+00:00",
                "expires_at": None, "version": 2147483647}],
}


def changed(path, value):
    document = json.loads(json.dumps(GOOD))
    *parents, last = path
    target = document
    for step in parents:
        target = target[step]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return document


def test_a_good_document_is_accepted_with_timestamps_in_utc():
    session, states = transfer.check_document(GOOD)
    assert session["created_at"].isoformat() == "2024-05-01T10:00:00.000001+00:00"
    assert states[0]["version"] == 2**31 - 1 and states[0]["created_at"] is None


@pytest.mark.parametrize("path, value, message", [
    (("format_version",), 1.0, "format_version: this version"),
    (("format_version",), True, "format_version: this version"),
    (("states",), None, "states: must be an array"),
    (("states", 0), [], "states[0]: must be a JSON object"),
    (("session", "id"), "", "session.id: must be an id string"),
    (("session", "id"), "x" * 37, "session.id: must be an id string"),
    (("session", "name"), "a\x00b", "session.name"),
    (("session", "status"), "zombie", "session.status: 'zombie' is not one of"),
    (("session", "meta"), {"n": 2**64}, "session.meta['n']: integer"),
    (("session", "last_active_at"), None, "session.last_active_at: must be a timestamp"),
    (("session", "last_active_at"), "2024-05-01T10:00:00.1234567Z", "ISO 8601"),
    (("session", "last_active_at"), "0999-12-31T00:00:00+00:00", "outside the years"),
    (("session", "last_active_at"), "2024-13-01T00:00:00+00:00", "not a valid timestamp"),
    (("states", 0, "session_id"), "s2", "states[0].session_id: 's2' is not the session's"),
    (("states", 0, "mode"), "x" * 51, "states[0].mode: is 51 characters long"),
    (("states", 0, "conversation_history"), {}, "states[0].conversation_history: must be"),
    (("states", 0, "context_variables"), [], "states[0].context_variables: must be"),
    (("states", 0, "plan_data"), {"k": "\ud800"}, "states[0].plan_data['k']"),
    (("states", 0, "current_step"), 2**31, "states[0].current_step: 2147483648 is outside"),
    (("states", 0, "version"), 0, "states[0].version: 0 is outside"),
    (("states", 0, "version"), None, "states[0].version: must be an integer"),
    (("states", 0, "updated_at"), 1714557600, "states[0].updated_at: must be an ISO 8601"),
    (("states", 0, "status"), None, "states[0].status: None is not one of"),
    (("states", 0, "id"), KeyError, "states[0]: missing key(s): id"),
])
def test_malformed_documents_are_refused_naming_the_place(path, value, message):
    with pytest.raises(InvalidExport) as refused:
        transfer.check_document(changed(path, value))
    assert message in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("data, message", [
    (b"\xff{}", "not UTF-8"),
    (b'{"a": 1, "a": 2}', "duplicate key 'a'"),
    (b'{"a": Infinity}', "Infinity is not a JSON value"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
])
def test_unreadable_files_are_refused(data, message):
    with pytest.raises(InvalidExport, match="the import file") as refused:
        transfer.loads(data)
    assert message in str(refused.value)


def test_deep_json_is_refused_for_the_narrowest_backend_without_a_database():
    deep = changed(("session", "meta"), json.loads("[" * 40 + "]" * 40))
    with pytest.raises(InvalidExport, match="nested deeper than 31 levels"):
        transfer.check_document(deep)
