"""What the benchmarks share: real servers in a throwaway directory, a service in its own process, CPU
accounting by process tree, percentiles and markdown tables.

Every process started here is stopped by its PID (through :class:`modelhub_devstack.ManagedServer`), on a
normal exit, on Ctrl-C and on SIGTERM (see :func:`sigterm_raises_interrupt`).
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

from modelhub_devstack import ManagedServer, NatsServer, PostgresServer, S3Endpoint, SeaweedS3
from modelhub_devstack.databases import create_database, database_url
from modelhub_devstack.ports import LOOPBACK, pick_free_port
from modelhub_devstack.server import http_ok

__all__ = [
    "BenchStack",
    "CpuMeter",
    "ServiceProcess",
    "machine_summary",
    "markdown_table",
    "percentile",
    "rss_bytes",
    "scratch_dir",
    "service_env",
    "sigterm_raises_interrupt",
    "start_replicas",
]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def scratch_dir(prefix: str, *, keep: bool, log: Callable[[str], None]) -> Iterator[Path]:
    """A temporary directory for one run; removed afterwards unless ``keep``."""
    # Short prefix: PostgreSQL's and SeaweedFS's Unix socket paths must stay under 108 bytes.
    root = Path(tempfile.mkdtemp(prefix=prefix))
    # PostgreSQL runs as a system user when we are root and must pass through this directory.
    root.chmod(0o711)
    try:
        yield root
    finally:
        if keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def sigterm_raises_interrupt() -> None:
    """Turn SIGTERM into KeyboardInterrupt, so the same ``finally`` blocks stop the servers either way."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


class BenchStack:
    """NATS with JetStream, PostgreSQL with pgvector and SeaweedFS S3 on free loopback ports under ``root``."""

    def __init__(
        self, root: Path, *, durable_postgres: bool = True, postgres_settings: Mapping[str, str] | None = None
    ) -> None:
        self.nats = NatsServer(root / "nats")
        self.postgres = PostgresServer(root / "postgres", durable=durable_postgres, settings=postgres_settings)
        # The directory is thrown away: a slow graceful stop buys nothing.
        self.s3 = SeaweedS3(root / "s3", stop_timeout=1.0)
        self._started: list[ManagedServer] = []

    def start(self, log: Callable[[str], None]) -> None:
        for server in (self.nats, self.postgres, self.s3):
            began = time.perf_counter()
            server.start()
            self._started.append(server)
            log(f"{server.name} ready in {time.perf_counter() - began:.2f} s (pid {server.recorded_pid()})")

    def stop(self) -> None:
        while self._started:
            self._started.pop().stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def s3_endpoint(self) -> S3Endpoint:
        return self.s3.s3_endpoint()

    def database(self, name: str, extensions: Sequence[str] = ("vector",)) -> str:
        """A new database on the PostgreSQL server; returns its superuser URL."""
        create_database(self.postgres.admin_url, name, extensions)
        return database_url(self.postgres.admin_url, name)

    def service_values(self, database_url: str, jwt_secret: str) -> dict[str, object]:
        """The settings every benchmarked service gets (loopback, this stack's servers, warnings only), as
        ``{"key": value}`` for :func:`service_env`; callers add the port and their own."""
        s3 = self.s3_endpoint
        return {
            "host": LOOPBACK,
            "log_level": "WARNING",
            "nats_url": self.nats.url,
            "jwt_secret": jwt_secret,
            "database_url": database_url,
            "s3_endpoint": s3.endpoint,
            "s3_access_key": s3.access_key,
            "s3_secret_key": s3.secret_key,
        }

    def processes(self) -> dict[str, int]:
        """PIDs of the running servers by name, for :class:`CpuMeter`."""
        found = {server.name: server.running_pid() for server in (self.nats, self.postgres, self.s3)}
        return {name: pid for name, pid in found.items() if pid is not None}


def service_env(prefix: str, values: Mapping[str, object]) -> dict[str, str]:
    """``{"PREFIX_KEY": "value"}`` for settings given as ``{"key": value}``."""
    return {f"{prefix}{key.upper()}": str(value) for key, value in values.items()}


class ServiceProcess(ManagedServer):
    """``python -m <module> serve`` in its own process and session, ready when ``GET /readyz`` answers 200."""

    start_timeout = 60.0
    stop_timeout = 15.0

    def __init__(self, workdir: Path, *, module: str, env: Mapping[str, str], port: int, name: str) -> None:
        super().__init__(name, workdir)
        self.module = module
        self.env = dict(env)
        self.port = port
        #: Every port the process was given, by setting name (set by :func:`start_replicas`).
        self.ports_by_key: dict[str, int] = {"port": port}

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, "serve"]

    def environment(self) -> Mapping[str, str]:
        # Settings of a developer's own stack in this shell must not leak into the benchmarked service.
        inherited = {key: value for key, value in os.environ.items() if not key.startswith("MODELHUB_")}
        return {**inherited, **self.env}

    def ports(self) -> Sequence[int]:
        return (self.port,)

    def is_healthy(self) -> bool:
        return http_ok(f"{self.base_url}/readyz", timeout=2.0)


def _proc_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name, which may contain spaces: [0] is the state (field 3 of proc(5)).
    return raw.rpartition(")")[2].split()


def _parents() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _proc_stat(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def _machine_busy_seconds() -> float:
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return 0.0
    # user nice system idle iowait irq softirq steal ...: everything but idle and iowait is busy.
    values = [int(v) for v in fields]
    return (sum(values[:8]) - values[3] - values[4]) / _CLOCK_TICKS


def _tree_cpu_seconds(pid: int, children: Mapping[int, list[int]]) -> float:
    """User + system CPU of ``pid``, of its exited and reaped children, and of its live descendants."""
    fields = _proc_stat(pid)
    if fields is None:
        return 0.0
    # utime, stime, cutime, cstime are fields 14-17 of proc(5), i.e. 11-14 here.
    own = sum(int(value) for value in fields[11:15]) / _CLOCK_TICKS
    return own + sum(_tree_cpu_seconds(child, children) for child in children.get(pid, ()))


class CpuMeter:
    """CPU seconds used by this process and by named process trees, between two snapshots."""

    def __init__(self, processes: Mapping[str, int]) -> None:
        self.processes = dict(processes)

    def names(self) -> list[str]:
        return ["client", *self.processes]

    def snapshot(self) -> dict[str, float]:
        """CPU seconds so far: ``client`` (this process), each named tree, ``machine`` (every process on
        every core, from /proc/stat) and ``wall``; ``machine`` minus the rest is what other work took."""
        children = _parents()
        taken = {"client": time.process_time(), "wall": time.perf_counter(), "machine": _machine_busy_seconds()}
        for name, pid in self.processes.items():
            taken[name] = _tree_cpu_seconds(pid, children)
        return taken

    @staticmethod
    def delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
        return {name: after[name] - before[name] for name in before}


def rss_bytes(pid: int | str = "self") -> int:
    """Resident memory of one process (``VmRSS``), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: every value reported was measured)."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def machine_summary() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"{stamp}; {os.cpu_count()} cores ({model}); {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; load average at the end {load}"
    )


def start_replicas(
    cleanup: contextlib.ExitStack,
    root: Path,
    *,
    module: str,
    prefix: str,
    values: Mapping[str, object],
    count: int,
    name: str,
    port_keys: Sequence[str] = ("port",),
) -> list[ServiceProcess]:
    """``count`` replicas of one service (same settings, each on free ports of its own for every key in
    ``port_keys``, the first serving ``/readyz``), started one after the other and stopped by ``cleanup``."""
    replicas: list[ServiceProcess] = []
    for index in range(1, count + 1):
        ports = {key: pick_free_port() for key in port_keys}
        process = ServiceProcess(
            root / f"{name}-{index}",
            module=module,
            env=service_env(prefix, {**values, **ports}),
            port=ports[port_keys[0]],
            name=f"{name} {index}",
        )
        process.ports_by_key = ports
        cleanup.callback(process.stop)
        process.start()
        replicas.append(process)
    return replicas
