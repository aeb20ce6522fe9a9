"""Inspecting and signalling processes by PID, safely on a machine whose PID 1 does not reap orphans.

A server started by an earlier ``modelhub-dev up`` is an orphan once that command exits. When it dies
nobody reaps it, so it lingers as a zombie and ``kill -0`` still succeeds. Everything here therefore reads
``/proc``: a zombie counts as dead, and a PID is only signalled after its command line proves it is still
the process we started (PIDs get reused).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

_DEAD_STATES = frozenset({"Z", "X", "x"})
_POLL_SECONDS = 0.05


def read_pid_file(path: Path) -> int | None:
    """The PID on the first line of ``path``, or None if the file is missing or unreadable."""
    try:
        first_line = path.read_text().splitlines()[0]
        pid = int(first_line.strip())
    except (OSError, IndexError, ValueError):
        return None
    return pid if pid > 0 else None


def write_pid_file(path: Path, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{pid}\n")


def process_cmdline(pid: int) -> list[str] | None:
    """argv of ``pid``, or None if there is no such process (or it is a zombie with an empty cmdline)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if not raw:
        return None
    return [part.decode(errors="replace") for part in raw.rstrip(b"\0").split(b"\0")]


def _stat_state(stat_path: Path) -> str | None:
    try:
        stat = stat_path.read_text()
    except OSError:
        return None
    # The command name in parentheses may itself contain spaces or parentheses: split after the last ')'.
    after_name = stat.rpartition(")")[2].split()
    return after_name[0] if after_name else None


def process_state(pid: int) -> str | None:
    """The one-letter state from ``/proc/<pid>/stat`` (R, S, Z, ...), or None if the PID does not exist."""
    return _stat_state(Path(f"/proc/{pid}/stat"))


def is_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie.

    A multi-threaded process (any Go server) whose main thread has exited shows as a zombie while its
    other threads are still shutting down and holding its sockets, so those threads are checked too.
    """
    state = process_state(pid)
    if state is None:
        return False
    if state not in _DEAD_STATES:
        return True
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    return any(_stat_state(task / "stat") not in (None, *_DEAD_STATES) for task in tasks)


def is_owned_alive(pid: int, owns: Callable[[list[str]], bool]) -> bool:
    """True if ``pid`` is alive and its command line is accepted by ``owns``."""
    if not is_alive(pid):
        return False
    cmdline = process_cmdline(pid)
    return cmdline is not None and owns(cmdline)


def send_signal(pid: int, sig: signal.Signals) -> None:
    """Signal ``pid``, and its whole process group when it leads one (our servers run in their own
    session, so helpers they spawned go down with them). A process that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
            return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def wait_until_dead(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``pid`` to exit (zombie counts); True if it did."""
    deadline = time.monotonic() + timeout
    while is_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_SECONDS)
    return True


def terminate(pid: int, *, timeout: float, first_signal: signal.Signals = signal.SIGTERM) -> None:
    """Send ``first_signal``; if ``pid`` is still alive after ``timeout`` seconds, SIGKILL it."""
    send_signal(pid, first_signal)
    if wait_until_dead(pid, timeout):
        return
    send_signal(pid, signal.SIGKILL)
    wait_until_dead(pid, 5.0)


def log_tail(path: Path, lines: int = 30, *, max_bytes: int = 16384) -> str:
    """The last ``lines`` lines of a log file, or a note saying why there are none."""
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            size = log.tell()
            log.seek(max(0, size - max_bytes))
            data = log.read()
    except OSError as exc:
        return f"(no log at {path}: {exc.strerror})"
    text = data.decode(errors="replace").splitlines()[-lines:]
    return "\n".join(text) if text else f"({path} is empty)"
