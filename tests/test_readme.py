"""The README's quick start, typed in order from the repository's root, works."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
INSTALL = "python3 -m venv .venv && .venv/bin/pip install -q -e . && "


def quick_start() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    return [line for line in block[1].splitlines() if line and not line.startswith("#")]


def test_the_quick_start_has_two_commands_and_the_second_is_what_ci_runs() -> None:
    commands = quick_start()
    assert len(commands) == 2
    assert commands[1] == "./scripts/test.sh"
    assert (ROOT / ".ci" / "run").read_text().splitlines()[-1] == "exec ./scripts/test.sh"


def test_the_quick_start_commands_work_typed_in_order_from_the_root(tmp_path: Path) -> None:
    first, second = quick_start()
    # Installing is what scripts/test.sh has done for this run already: run the rest of
    # command 1 as typed (with this interpreter's logstream, no linger), then check that
    # command 2 is found from where command 1 left the shell.
    assert first.startswith(INSTALL)
    rest = first.removeprefix(INSTALL)
    rest = rest.replace(".venv/bin/logstream", f"{shlex.quote(sys.executable)} -m logstream")
    rest = re.sub(r"--linger \d+", "--linger 0", rest)
    script = f"{rest} && test -x {second.split()[0]} && pwd"
    env = {**os.environ, "LOGSTREAM_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(
        ["sh", "-c", script], cwd=ROOT, env=env, capture_output=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines()[-1] == str(ROOT)
