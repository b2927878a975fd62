"""An installed wheel (not the source tree) migrates a fresh database from any directory.

peewee-migrate looks for a ``migrations/`` folder in the current directory by default, and
silently creates an empty one when it is missing; an installed copy must find the scripts it
ships instead. This builds a wheel of the working tree, installs it into a brand-new virtual
environment, and runs the command line from an empty directory.
"""

import os
import shutil
import sqlite3
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SPEC_INDEXES = {
    "idx_session_states_session_id",
    "idx_session_states_status",
    "idx_session_states_session_status",
    "idx_session_states_mode",
    "idx_session_states_updated",
}
NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__",
                                    ".pytest_cache", "*.db", "*.db-*")


def run(command, cwd, env=None, timeout=300):
    result = subprocess.run([str(part) for part in command], cwd=cwd, env=env, timeout=timeout,
                            capture_output=True, text=True)
    assert result.returncode == 0, "%s failed (%d):\n%s\n%s" % (
        " ".join(map(str, command)), result.returncode, result.stdout, result.stderr)
    return result.stdout


def clean_environment(home):
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "SESSIONSTATE_DATABASE_URL")
           and not key.startswith("PYTEST")}
    env["HOME"] = str(home)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python, console script, wheel) of a fresh venv with only the wheel and its deps."""
    root = tmp_path_factory.mktemp("packaging")
    # Build from a copy, so that the build leaves nothing in the working tree.
    source = root / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    env = clean_environment(root / "home")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", root / "dist",
         source], cwd=root, env=env)
    wheels = list((root / "dist").glob("sessionstate-*.whl"))
    assert len(wheels) == 1, wheels
    venv.create(root / "venv", with_pip=True, clear=True)
    python = root / "venv" / "bin" / "python"
    run([python, "-m", "pip", "install", "--quiet", "-c", REPO / "constraints.txt", wheels[0]],
        cwd=root, env=env)
    return python, root / "venv" / "bin" / "sessionstate", wheels[0], env


@pytest.mark.slow
def test_the_wheel_ships_the_migrations_inside_the_package(installed):
    _, _, wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "sessionstate/migrations/001_create_sessions.py" in names
    assert "sessionstate/migrations/002_add_session_states.py" in names
    assert not any(name.startswith("migrations/") for name in names)
    assert not any(name.startswith("tests/") for name in names)


@pytest.mark.slow
def test_installed_package_migrates_from_an_empty_directory(installed, tmp_path):
    python, script, _, env = installed
    work = tmp_path / "somewhere else"
    work.mkdir()

    where = run([python, "-c", "import sessionstate; print(sessionstate.__file__)"],
                cwd=work, env=env)
    assert Path(where.strip()).is_relative_to(python.parent.parent), where
    assert not Path(where.strip()).is_relative_to(REPO)

    output = run([python, "-m", "sessionstate", "--database", "sqlite:///state.db", "migrate"],
                 cwd=work, env=env)
    assert "001_create_sessions" in output and "002_add_session_states" in output
    assert "up to date" in run([script, "--database", "sqlite:///state.db", "migrate"],
                               cwd=work, env=env)
    status = run([script, "--database", "sqlite:///state.db", "status"], cwd=work, env=env)
    assert "pending" not in status and "applied  002_add_session_states" in status

    with sqlite3.connect(work / "state.db") as database:
        tables = {row[0] for row in database.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        indexes = {row[0] for row in database.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"sessions", "session_states"} <= tables
    assert SPEC_INDEXES <= indexes

    leftovers = {path.name for path in work.iterdir()}
    assert "migrations" not in leftovers
    assert leftovers <= {"state.db", "state.db-wal", "state.db-shm"}
    assert not (Path(env["HOME"]) / ".sessionstate").exists()  # --database was used


@pytest.mark.slow
def test_installed_package_uses_the_environment_variable(installed, tmp_path):
    python, _, _, env = installed
    work = tmp_path / "cwd"
    work.mkdir()
    target = tmp_path / "from_env.db"
    env = dict(env, SESSIONSTATE_DATABASE_URL="sqlite:///" + str(target))
    run([python, "-m", "sessionstate", "migrate"], cwd=work, env=env)
    with sqlite3.connect(target) as database:
        tables = {row[0] for row in database.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"sessions", "session_states"} <= tables
    assert list(work.iterdir()) == []


def test_the_ci_script_parses_and_runs_the_readme_test_command():
    script = REPO / ".ci" / "run"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    commands = [line.strip() for line in script.read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert "set -euo pipefail" in commands
    assert "make test" in commands
