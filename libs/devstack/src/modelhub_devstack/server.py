"""The base of every server the dev stack runs: start detached, wait for health, stop by recorded PID."""

from __future__ import annotations

import abc
import logging
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from modelhub_devstack.errors import DevstackError
from modelhub_devstack.ports import LOOPBACK, is_port_free
from modelhub_devstack.processes import (
    is_owned_alive,
    log_tail,
    read_pid_file,
    send_signal,
    terminate,
    write_pid_file,
)

logger = logging.getLogger(__name__)

_FIRST_POLL_SECONDS = 0.02
_MAX_POLL_SECONDS = 0.25


def http_ok(url: str, *, timeout: float = 1.0) -> bool:
    """True if ``GET url`` answers 200. Any connection problem means "not healthy (yet)"."""
    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


class ManagedServer(abc.ABC):
    """One server process: a log file and a PID file in its own directory.

    Liveness is judged by :meth:`is_healthy` (a port or health endpoint), never by the PID alone: a dead
    orphan lingers as a zombie here. The PID file is only used to stop a process that another
    invocation started, and only after its command line proves it is still ours.
    """

    #: Seconds :meth:`start` waits for :meth:`is_healthy` before giving up.
    start_timeout: float = 30.0
    #: Seconds :meth:`stop` waits after SIGTERM before sending SIGKILL.
    stop_timeout: float = 10.0

    def __init__(
        self,
        name: str,
        workdir: Path,
        *,
        log_path: Path | None = None,
        pid_path: Path | None = None,
        stop_timeout: float | None = None,
    ) -> None:
        self.name = name
        if stop_timeout is not None:
            self.stop_timeout = stop_timeout
        self.workdir = workdir
        self.log_path = log_path or workdir / f"{name}.log"
        self.pid_path = pid_path or workdir / f"{name}.pid"
        self._process: subprocess.Popen[bytes] | None = None
        #: Seconds the last :meth:`start` took, preparation (e.g. initdb) included, until healthy.
        self.startup_seconds: float | None = None

    # --- what a concrete server defines -------------------------------------------------------------

    @abc.abstractmethod
    def command(self) -> list[str]:
        """argv that starts the server in the foreground."""

    @abc.abstractmethod
    def is_healthy(self) -> bool:
        """True if the server answers its health check right now. Must not raise."""

    def ports(self) -> Sequence[int]:
        """TCP ports on 127.0.0.1 the server binds; checked to be free before starting."""
        return ()

    def environment(self) -> Mapping[str, str] | None:
        """Environment of the server process; None inherits ours."""
        return None

    def prepare(self) -> None:
        """Create directories and config files before the first launch (idempotent)."""
        return None

    def owns(self, cmdline: list[str]) -> bool:
        """True if a process with this argv is the one this object starts (guards against PID reuse)."""
        return cmdline == self.command()

    # --- lifecycle ----------------------------------------------------------------------------------

    def recorded_pid(self) -> int | None:
        """PID of the server as recorded on disk, whether or not it is still running."""
        return read_pid_file(self.pid_path)

    def running_pid(self) -> int | None:
        """The recorded PID if that process is alive (not a zombie) and is still ours."""
        pid = self.recorded_pid()
        if pid is None or not is_owned_alive(pid, self.owns):
            return None
        return pid

    def ensure_started(self) -> bool:
        """Start the server unless it is already healthy; True if it had to be started."""
        if self.is_healthy():
            return False
        self.start()
        return True

    def wait_until_healthy(self, timeout: float) -> bool:
        """Poll :meth:`is_healthy` for up to ``timeout`` seconds; True as soon as it is."""
        deadline = time.monotonic() + timeout
        interval = _FIRST_POLL_SECONDS
        while not self.is_healthy():
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)
            interval = min(interval * 2, _MAX_POLL_SECONDS)
        return True

    def start(self) -> None:
        """Launch the server and wait until it is healthy, or raise :class:`DevstackError`."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        stale = self.running_pid()
        if stale is not None:
            # Alive but not healthy (hung, or half-started by a crashed `up`): replace it.
            logger.warning(
                "restarting %s: its process %d is alive but not healthy",
                self.name,
                stale,
                extra={"server": self.name, "pid": stale},
            )
            self._stop_recorded(stale)
        busy = [port for port in self.ports() if not is_port_free(port)]
        if busy:
            listed = ", ".join(str(port) for port in busy)
            raise DevstackError(
                f"{self.name}: port {listed} on {LOOPBACK} is already in use by another process. "
                "Stop that process and try again (for the dev stack, `modelhub-dev clean` picks new ports, "
                "but also deletes the stack's data)."
            )
        began = time.monotonic()
        self.prepare()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- modelhub-dev: starting {self.name} at {datetime.now(UTC).isoformat()}\n".encode())
        self._launch()
        self._wait_until_healthy(began + self.start_timeout)
        self.startup_seconds = time.monotonic() - began
        logger.info("server ready", extra={"server": self.name, "startup_seconds": round(self.startup_seconds, 3)})

    def stop(self) -> bool:
        """Stop the server (SIGTERM, then SIGKILL after :attr:`stop_timeout`); True if one was running."""
        stopped = False
        process = self._process
        if process is not None and process.poll() is None:
            self._stop_child(process)
            stopped = True
        else:
            pid = self.running_pid()
            if pid is not None:
                self._stop_recorded(pid)
                stopped = True
        self._process = None
        self.pid_path.unlink(missing_ok=True)
        self._after_stop()
        return stopped

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- hooks and helpers for subclasses -----------------------------------------------------------

    def _launch(self) -> None:
        """Start :meth:`command` detached in its own session, output to the log, PID to the PID file."""
        command = self.command()
        env = self.environment()
        with self.log_path.open("ab") as log:
            try:
                self._process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.workdir,
                    env=dict(env) if env is not None else None,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                raise DevstackError(f"{self.name}: could not run {command[0]}: {exc.strerror}") from exc
        write_pid_file(self.pid_path, self._process.pid)

    def _exit_code(self) -> int | None:
        """Exit code of a server launched by this object, None while it runs (or if not ours)."""
        return self._process.poll() if self._process is not None else None

    def _wait_until_healthy(self, deadline: float) -> None:
        interval = _FIRST_POLL_SECONDS
        while True:
            if self.is_healthy():
                return
            code = self._exit_code()
            if code is not None:
                self._process = None
                raise self._failure(f"exited with code {code} while starting")
            if time.monotonic() >= deadline:
                self.stop()
                raise self._failure(f"was not healthy within {self.start_timeout:.0f} s (stopped it again)")
            time.sleep(interval)
            interval = min(interval * 2, _MAX_POLL_SECONDS)

    def _failure(self, what: str) -> DevstackError:
        return DevstackError(f"{self.name} {what}. Its log is {self.log_path}; last lines:\n{log_tail(self.log_path)}")

    def _stop_child(self, process: subprocess.Popen[bytes]) -> None:
        # Our own child: waiting on it reaps it, so no zombie is left behind.
        send_signal(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=self.stop_timeout)
            return
        except subprocess.TimeoutExpired:
            send_signal(process.pid, signal.SIGKILL)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            logger.warning("server did not exit after SIGKILL", extra={"server": self.name})

    def _stop_recorded(self, pid: int) -> None:
        terminate(pid, timeout=self.stop_timeout)

    def _after_stop(self) -> None:
        """Clean up what the server leaves behind once it is gone."""
        return None
