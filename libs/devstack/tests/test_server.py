"""The managed-process base: failure messages, stopping by recorded PID, never killing a stranger."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelhub_devstack import DevstackError, ManagedServer, NatsServer
from modelhub_devstack.processes import is_alive, process_cmdline, process_state, read_pid_file

READY_THEN_SLEEP = "import pathlib, time; pathlib.Path('ready').touch(); time.sleep(60)"


class ScriptServer(ManagedServer):
    """A "server" that runs a Python snippet and is healthy once a ``ready`` file exists in its dir."""

    def __init__(self, workdir: Path, script: str, *, start_timeout: float = 5.0) -> None:
        super().__init__("script", workdir, stop_timeout=2.0)
        self.script = script
        self.start_timeout = start_timeout

    def command(self) -> list[str]:
        return [sys.executable, "-c", self.script]

    def is_healthy(self) -> bool:
        return (self.workdir / "ready").exists()


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(["sleep", "60"])
    yield process
    process.kill()
    process.wait()


def test_a_server_that_exits_reports_its_exit_code_and_log(tmp_path: Path) -> None:
    server = ScriptServer(tmp_path, "import sys; sys.exit('cannot bind: boom')")
    with pytest.raises(DevstackError) as failure:
        server.start()
    message = str(failure.value)
    assert "exited with code 1" in message
    assert "cannot bind: boom" in message
    assert str(server.log_path) in message


def test_a_server_that_never_gets_healthy_is_stopped_and_reported(tmp_path: Path) -> None:
    server = ScriptServer(tmp_path, "import time; time.sleep(60)", start_timeout=0.5)
    with pytest.raises(DevstackError, match="not healthy within"):
        server.start()
    pid = read_pid_file(server.pid_path)
    assert pid is None or not is_alive(pid)


def test_start_and_stop_a_healthy_server(tmp_path: Path) -> None:
    server = ScriptServer(tmp_path, READY_THEN_SLEEP)
    server.start()
    pid = server.running_pid()
    assert pid is not None
    assert server.startup_seconds is not None
    assert server.stop() is True
    assert not is_alive(pid)
    assert not server.pid_path.exists()
    assert server.stop() is False


def test_stop_never_signals_a_reused_pid(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    server = ScriptServer(tmp_path, READY_THEN_SLEEP)
    server.pid_path.write_text(f"{sleeper.pid}\n")
    assert server.stop() is False
    assert sleeper.poll() is None


def test_a_zombie_counts_as_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        # Not waited for yet: once it exits it is a zombie, which /proc still lists.
        for _ in range(200):
            if process_state(child.pid) == "Z":
                break
            subprocess.run(["sleep", "0.01"], check=True)
        assert process_state(child.pid) == "Z"
        assert not is_alive(child.pid)
        assert process_cmdline(child.pid) is None
    finally:
        child.wait()


def test_another_invocation_stops_a_server_by_its_pid_file(tmp_path: Path) -> None:
    first = NatsServer(tmp_path / "nats")
    first.start()
    # A second object for the same directory and ports, as a later `modelhub-dev down` would build.
    second = NatsServer(tmp_path / "nats", port=first.port, monitor_port=first.monitor_port)
    assert second.is_healthy()
    assert second.running_pid() == first.recorded_pid()
    assert second.stop() is True
    assert not first.is_healthy()
    first.stop()


def test_start_refuses_a_port_taken_by_someone_else(tmp_path: Path) -> None:
    running = NatsServer(tmp_path / "a")
    with running:
        clash = NatsServer(tmp_path / "b", port=running.port)
        with pytest.raises(DevstackError, match=f"port {running.port}.* already in use"):
            clash.start()
