"""The README's examples run as written (against a temporary SQLite file)."""

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_scripts_run(tmp_path):
    blocks = python_blocks()
    assert len(blocks) >= 2
    env = dict(os.environ, SESSIONSTATE_DATABASE_URL="sqlite:///%s" % (tmp_path / "r.db"),
               HOME=str(tmp_path))
    first = subprocess.run([sys.executable, "-c", blocks[0]], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "refused: 2 != 3" in first.stdout
    assert "planning 1 1" in first.stdout
    second = subprocess.run([sys.executable, "-c", blocks[1]], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    assert "'version': 2" in second.stdout and "'current_step': 2" in second.stdout
