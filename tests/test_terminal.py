"""`logstream run` on a real terminal: a pseudo-terminal from Python's `pty` module is
logstream's controlling terminal and stdout, as when a developer types `logstream run make`."""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
from dataclasses import dataclass, field
from pathlib import Path

import trio

from logstream import logformat
from logstream.store import LogReader

from .processes import DEADLINE_S, URL_LINE, start_logstream

PY = sys.executable


def set_size(fd: int, columns: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


@dataclass
class OnTerminal:
    """A `logstream` process whose stdout is a terminal (the test holds its master side)."""

    process: trio.Process
    master: int
    screen: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    changed: trio.Event = field(default_factory=trio.Event)

    async def wait_for(self, wanted: bytes, *, in_stderr: bool = False) -> None:
        with trio.fail_after(DEADLINE_S):
            while wanted not in (self.stderr if in_stderr else self.screen):
                if self.process.returncode is not None:
                    raise AssertionError(f"exited; screen {self.screen!r} {self.stderr!r}")
                await self.changed.wait()

    async def wait_exit(self) -> int:
        with trio.fail_after(DEADLINE_S):
            return await self.process.wait()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


def plain_env() -> dict[str, str]:
    """Our environment without PYTHONUNBUFFERED: commands buffer as they do by default."""
    return {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}


def _become_terminal_owner() -> None:
    # Its own session with the terminal as controlling terminal: resizing the terminal sends
    # SIGWINCH to logstream, as a shell's job control would.
    fcntl.ioctl(1, termios.TIOCSCTTY, 0)


async def run_on_terminal(
    nursery: trio.Nursery, *args: str, columns: int = 100, rows: int = 30
) -> OnTerminal:
    master, secondary = pty.openpty()
    set_size(secondary, columns, rows)
    try:
        process = await trio.lowlevel.open_process(
            [PY, "-m", "logstream", "run", "--port", "0", *args],
            stdin=subprocess.DEVNULL,
            stdout=secondary,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_become_terminal_owner,
            env=plain_env(),
        )
    finally:
        os.close(secondary)
    running = OnTerminal(process, master)

    async def read_screen() -> None:
        os.set_blocking(master, False)
        try:
            while True:
                await trio.lowlevel.wait_readable(master)
                try:
                    data = os.read(master, 65536)
                except OSError as error:
                    if error.errno == errno.EIO:  # logstream closed the terminal
                        return
                    raise
                if not data:
                    return
                running.screen += data.replace(b"\r\n", b"\n")
                running._wake()
        finally:
            trio.lowlevel.notify_closing(master)
            os.close(master)

    async def read_stderr() -> None:
        assert process.stderr is not None
        async with process.stderr:
            while data := await process.stderr.receive_some(65536):
                running.stderr += data
                running._wake()

    async def reap() -> None:
        try:
            async with trio.open_nursery() as readers:
                readers.start_soon(read_screen)
                readers.start_soon(read_stderr)
        finally:
            if process.returncode is None:
                process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()

    nursery.start_soon(reap)
    return running


def stored_lines(data_dir: Path, stderr: bytes | bytearray) -> list[tuple[str, str]]:
    """The job's lines as ``(stream, text)``, stream ``o`` or ``e``, read from the data dir."""
    match = URL_LINE.match(bytes(stderr))
    assert match, stderr
    reader = LogReader(data_dir / "jobs" / match["id"].decode())
    chunk, _offset, _first = reader.read_after(0, max_bytes=1 << 20)
    return [(stream, text) for _seq, stream, text in logformat.iter_lines(chunk.payload)]


TERMINAL_REPORT = (
    "import os, sys\n"
    "size = os.get_terminal_size(1)\n"
    "print('stdout', sys.stdout.isatty(), 'stderr', sys.stderr.isatty(), "
    "'size', size.columns, size.lines)\n"
    "print('\\x1b[31mon stderr\\x1b[0m', file=sys.stderr)\n"
)


async def test_on_a_terminal_the_command_gets_a_pty_for_stdout_and_another_for_stderr(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    running = await run_on_terminal(
        nursery, "--data-dir", str(data_dir), "--", PY, "-c", TERMINAL_REPORT, columns=93, rows=31
    )
    assert await running.wait_exit() == 0
    assert b"stdout True stderr True size 93 31\n" in running.screen
    # Its stderr is copied to our stderr and stays a stderr line in the log, colours and all.
    assert b"\x1b[31mon stderr\x1b[0m\n" in running.stderr
    assert stored_lines(data_dir, running.stderr) == [
        ("o", "stdout True stderr True size 93 31"),
        ("e", "\x1b[31mon stderr\x1b[0m"),
    ]


async def test_no_pty_on_a_terminal_gives_the_command_pipes(nursery: trio.Nursery) -> None:
    script = "import sys; print(sys.stdout.isatty(), sys.stderr.isatty())"
    running = await run_on_terminal(nursery, "--no-pty", "--", PY, "-c", script)
    assert await running.wait_exit() == 0
    assert b"False False\n" in running.screen


async def test_without_a_terminal_pipes_are_the_default_and_pty_asks_for_80x24(
    nursery: trio.Nursery,
) -> None:
    script = (
        "import os, sys\n"
        "print(sys.stdout.isatty(), sys.stderr.isatty())\n"
        "if sys.stdout.isatty(): print(tuple(os.get_terminal_size(1)), os.environ['PAGER'])\n"
    )
    piped = await start_logstream(nursery, "run", "--port", "0", "--", PY, "-c", script)
    assert await piped.wait_exit() == 0
    assert bytes(piped.stdout) == b"False False\n"
    asked = await start_logstream(nursery, "run", "--port", "0", "--pty", "--", PY, "-c", script)
    assert await asked.wait_exit() == 0
    assert bytes(asked.stdout) == b"True True\n(80, 24) cat\n"
    sized = await start_logstream(
        nursery, "run", "--port", "0", "--pty-size", "132x43", "--pty", "--", PY, "-c", script
    )
    assert await sized.wait_exit() == 0
    assert bytes(sized.stdout) == b"True True\n(132, 43) cat\n"


RESIZE_REPORT = (
    "import os, signal, time\n"
    "resized = []\n"
    "signal.signal(signal.SIGWINCH, lambda *_: resized.append(1))\n"
    "print('size', tuple(os.get_terminal_size(1)), flush=True)\n"
    "while not resized:\n"
    "    time.sleep(0.01)\n"
    "print('resized', tuple(os.get_terminal_size(1)), flush=True)\n"
)


async def test_the_pty_follows_the_terminals_resizes(nursery: trio.Nursery) -> None:
    running = await run_on_terminal(nursery, "--", PY, "-c", RESIZE_REPORT, columns=80, rows=24)
    await running.wait_for(b"size (80, 24)\n")
    set_size(running.master, 120, 50)  # the terminal window was resized: SIGWINCH to logstream
    await running.wait_for(b"resized (120, 50)\n")
    assert await running.wait_exit() == 0


async def test_a_pager_never_hangs_a_job_under_a_pty(nursery: trio.Nursery, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    await trio.run_process([*git, "init", "-q"])
    await trio.run_process([*git, "commit", "-q", "--allow-empty", "-m", "the first commit"])
    # A pager that waits for a key on the terminal, as `less` does: nobody will press one.
    waiting_pager = "read key < /dev/tty; cat"
    running = await start_logstream(
        nursery,
        "run",
        "--port",
        "0",
        "--pty",
        "--",
        "git",
        "-C",
        str(repo),
        "log",
        env={"PAGER": waiting_pager, "GIT_PAGER": waiting_pager},
    )
    assert await running.wait_exit() == 0
    assert b"the first commit" in running.stdout


def _line_by_line(marker: Path) -> str:
    # Each line waits until the test has seen the one before on logstream's terminal copy:
    # whatever buffering the command's stdout has, it shows here.
    return (
        "import os, sys, time\n"
        f"marker = {str(marker)!r}\n"
        "def wait(n):\n"
        "    while not os.path.exists(f'{marker}.{n}'):\n"
        "        time.sleep(0.01)\n"
        "print('tests/test_x.py::test_one FAILED')\n"
        "wait(1)\n"
        "print('E   AssertionError: expected 3, got 4', file=sys.stderr)\n"
        "wait(2)\n"
        "print('1 failed')\n"
    )


async def test_pty_mode_keeps_the_order_of_stdout_and_stderr_lines_and_marks_stderr(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    marker = tmp_path / "seen"
    script = _line_by_line(marker)
    running = await run_on_terminal(nursery, "--data-dir", str(data_dir), "--", PY, "-c", script)
    await running.wait_for(b"test_one FAILED\n")
    await trio.Path(f"{marker}.1").touch()
    await running.wait_for(b"AssertionError: expected 3, got 4\n", in_stderr=True)
    await trio.Path(f"{marker}.2").touch()
    assert await running.wait_exit() == 0
    assert stored_lines(data_dir, running.stderr) == [
        ("o", "tests/test_x.py::test_one FAILED"),
        ("e", "E   AssertionError: expected 3, got 4"),
        ("o", "1 failed"),
    ]


async def test_the_end_line_and_a_signal_notice_go_to_stderr_not_the_terminal_copy(
    nursery: trio.Nursery,
) -> None:
    script = "import time; print('ready', flush=True); time.sleep(60)"
    running = await run_on_terminal(nursery, "--", PY, "-c", script)
    await running.wait_for(b"ready\n")
    running.process.send_signal(signal.SIGINT)
    assert await running.wait_exit() == 128 + signal.SIGINT
    assert b"logstream: " not in running.screen
    assert b"logstream: got Ctrl-C: told the job to stop; it is killed in 10 s" in running.stderr
