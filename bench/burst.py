"""A burst of concurrent clients against the registry with one worker process and with N, in one run.

    .venv/bin/python bench/burst.py [--models 2000] [--workers 2] [--clients 200] [--gets 20]
                                    [--processes 4] [--rounds 3] [--keep]

One run starts real NATS (JetStream), PostgreSQL+pgvector and SeaweedFS S3 on free loopback ports in a
temporary directory, migrates, and seeds model files through the API (the same files as bench/registry.py).
Then it runs two registries side by side on the same database (`python -m modelhub_registry serve` with
`MODELHUB_REGISTRY_WORKERS=1` and with `=N`) and sends each the same burst, rounds interleaved (1, N, 1, N,
…): `--clients` clients, each with a connection of its own, all released at once, each making `--gets`
GETs of one model file (a normal user's token, a model it may read) one after another. The clients are
spread over `--processes` load-generator processes, each an asyncio loop speaking HTTP/1.1 keep-alive
straight over its sockets: an httpx client in one Python process tops out at a few hundred requests per
second here (milliseconds of CPU per request), so it would measure itself rather than the registry.

Latency is send → last body byte of each GET, pooled over every round; req/s is each round's requests over
its wall time (first send to last answer), the median round reported. Errors are counted by kind.

Progress goes to stderr, the markdown table to stdout. Every process started is stopped by its PID at the
end, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import random
import re
import secrets
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import httpx
from _support import (
    BenchStack,
    CpuMeter,
    ServiceProcess,
    machine_summary,
    markdown_table,
    percentile,
    scratch_dir,
    service_env,
    sigterm_raises_interrupt,
)
from registry import ADMIN, OWNER_GROUPS, OWNERS, STDERR, VIEWER, VIEWER_GROUPS, Bench, model_spec, readable_by_viewer
from registry import with_chains as chained

from modelhub_common.auth import issue_token
from modelhub_devstack import pick_free_port
from modelhub_registry import bootstrap
from modelhub_registry.settings import ENV_PREFIX, RegistrySettings

_WORKER_PID = re.compile(rb'^modelhub_worker_info\{[^}]*pid="(\d+)"', re.MULTILINE)


@dataclass
class ClientReport:
    """What one load-generator process measured in one round."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    first_send: float = float("inf")
    last_answer: float = 0.0
    cpu_seconds: float = 0.0
    reopened: int = 0
    #: Connections per worker process (pid) that accepted them.
    workers: Counter[str] = field(default_factory=Counter)
    #: Why the generator stopped early, if it did.
    failure: str = ""


class _ClosedWhileIdle(Exception):
    """The server had closed the connection before this request reached it (nothing was answered)."""


class Connection:
    """One client's keep-alive HTTP/1.1 connection, spoken directly over asyncio streams: a GET costs the
    load generator a few tens of microseconds of CPU instead of httpx's milliseconds, so that the
    generators leave the cores to the registry. It understands what the registry sends (``Content-Length``
    bodies). A connection the server closed while it was idle (uvicorn's keep-alive timeout, 5 s) is
    opened again and the GET sent once more, as HTTP clients do for idempotent requests; those are
    counted, since each costs a connect."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port = host, port
        self._head = f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.reopened = 0

    async def get(self, path: str) -> int:
        """The status of ``GET path``, after its whole body was read."""
        return (await self.fetch(path))[0]

    async def fetch(self, path: str) -> tuple[int, bytes]:
        """Status and body of ``GET path``."""
        reused = self._streams is not None
        try:
            return await self._get(path)
        except _ClosedWhileIdle:
            if not reused:
                raise ConnectionResetError("the server closed a new connection before answering") from None
            self.reopened += 1
            return await self._get(path)

    async def _get(self, path: str) -> tuple[int, bytes]:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._streams
        try:
            writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\n" + self._head)
            line = await reader.readline()
            if not line:
                raise _ClosedWhileIdle
            status = int(line.split(b" ", 2)[1])
            length, close = 0, False
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
                elif name == b"transfer-encoding":
                    raise ValueError("a chunked answer; this client reads Content-Length bodies only")
            body = await reader.readexactly(length)
        except BaseException:
            await self.close()
            raise
        if close:
            await self.close()
        return status, body

    async def close(self) -> None:
        if self._streams is not None:
            writer = self._streams[1]
            self._streams = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _clients(url: str, token: str, ids: list[str], clients: int, gets: int, seed: int, start: Barrier) -> Any:
    report = ClientReport()
    rng = random.Random(seed)
    target = httpx.URL(url)
    connections = [Connection(target.host, target.port or 80, token) for _ in range(clients)]
    try:
        # Every generator started (spawning and importing take seconds on a busy machine), then every
        # connection opened and the route warmed, then the burst released: the warmed connections wait
        # less than the server's keep-alive timeout.
        await asyncio.to_thread(start.wait)
        # The warm-up asks /metrics, whose modelhub_worker_info names the worker holding the connection.
        answers = await asyncio.gather(*(c.fetch("/metrics") for c in connections))
        for _, body in answers:
            found = _WORKER_PID.search(body)
            report.workers[found.group(1).decode() if found else "?"] += 1
        await asyncio.to_thread(start.wait)
        cpu_before = time.process_time()

        async def client(connection: Connection) -> None:
            for _ in range(gets):
                path = f"/api/v1/models/{rng.choice(ids)}"
                sent = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process of the machine
                report.first_send = min(report.first_send, sent)
                try:
                    status = await connection.get(path)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    report.errors[type(exc).__name__] += 1
                    continue
                answered = time.monotonic()
                report.last_answer = max(report.last_answer, answered)
                if status != 200:
                    report.errors[f"HTTP {status}"] += 1
                    continue
                report.latencies.append(answered - sent)

        await asyncio.gather(*(client(c) for c in connections))
        report.cpu_seconds = time.process_time() - cpu_before
        report.reopened = sum(c.reopened for c in connections)
    finally:
        await asyncio.gather(*(c.close() for c in connections))
    return report


def _load_generator(
    url: str, token: str, ids: list[str], clients: int, gets: int, seed: int, start: Barrier, out: Any
) -> None:
    try:
        out.put(asyncio.run(_clients(url, token, ids, clients, gets, seed, start)))
    except BaseException as exc:  # the parent waits for one report per generator: always send one
        start.abort()
        out.put(ClientReport(failure=repr(exc)))
        raise


@dataclass
class Round:
    latencies: list[float]
    errors: Counter[str]
    wall: float
    cpu: dict[str, float]
    reopened: int = 0
    #: Connections each worker accepted, most first.
    spread: list[int] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.wall if self.wall > 0 else 0.0


def burst(url: str, token: str, ids: list[str], args: argparse.Namespace, seed: int, meter: CpuMeter) -> Round:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(args.processes + 1)
    out = ctx.Queue()
    shares = [
        args.clients // args.processes + (1 if k < args.clients % args.processes else 0) for k in range(args.processes)
    ]
    generators = [
        ctx.Process(
            target=_load_generator,
            args=(url, token, ids, share, args.gets, seed * 1000 + k, start, out),
            name=f"burst-client-{k}",
        )
        for k, share in enumerate(shares)
    ]
    for process in generators:
        process.start()
    try:
        start.wait(timeout=120)  # every generator started
        start.wait(timeout=120)  # every client connected and warmed
        before = meter.snapshot()
        reports: list[ClientReport] = [out.get(timeout=600) for _ in generators]
        failures = [r.failure for r in reports if r.failure]
        if failures:
            raise SystemExit(f"a load generator failed: {failures[0]}")
        cpu = CpuMeter.delta(before, meter.snapshot())
        cpu["load generators"] = sum(r.cpu_seconds for r in reports)
    finally:
        for process in generators:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()
    errors: Counter[str] = Counter()
    for report in reports:
        errors.update(report.errors)
    wall = max(r.last_answer for r in reports) - min(r.first_send for r in reports)
    reopened = sum(r.reopened for r in reports)
    workers: Counter[str] = Counter()
    for report in reports:
        workers.update(report.workers)
    latencies = [x for r in reports for x in r.latencies]
    return Round(latencies, errors, wall, cpu, reopened, sorted(workers.values(), reverse=True))


async def seed_models(url: str, db: str, nats_url: str, tokens: dict[str, str], count: int) -> list[str]:
    """Creates ``count`` model files through the API; returns the ids the viewer may read."""
    rng = random.Random(20240601)
    specs = chained([model_spec(i, rng) for i in range(count)])
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        bench = Bench(client, CpuMeter({}), db, nats_url, tokens, concurrency=8)
        await bench.register_base_models()
        await bench.seed(specs)
        await bench.wait_for_relay()
        await bench.vacuum_analyze()
    return [s["id"] for s in specs if readable_by_viewer(s)]


def _ms(value: float) -> str:
    return f"{value * 1000:,.1f} ms"


def print_results(
    args: argparse.Namespace, rounds: dict[int, list[Round]], command: str, load: tuple[float, float]
) -> None:
    workers = sorted(rounds)
    single, multi = workers[0], workers[-1]
    print(f"### registry burst: {args.clients} clients × {args.gets} GETs, 1 worker vs {multi}")
    print()
    print(f"`{command}` — {machine_summary()}.")
    print(
        f"{args.models:,} model files; GET /api/v1/models/{{id}} as a normal user; {args.clients} clients over "
        f"{args.processes} load-generator processes, {args.rounds} rounds per configuration, interleaved. "
        f"1-minute load average {load[0]:.2f} before the bursts, {load[1]:.2f} after."
    )
    print()

    def figures(samples: list[Round]) -> dict[str, float]:
        pooled = [x for r in samples for x in r.latencies]
        return {
            "p50": percentile(pooled, 50),
            "p99": percentile(pooled, 99),
            "max": max(pooled),
            "rate": statistics.median(r.rate for r in samples),
        }

    one, many = figures(rounds[single]), figures(rounds[multi])
    rows = []
    for key, label in (("p50", "GET p50"), ("p99", "GET p99"), ("max", "GET max")):
        target = "≤ 250 ms" if key == "p99" else "—"
        met = ("yes" if many[key] <= 0.250 else "no") if key == "p99" else "—"
        rows.append([label, _ms(one[key]), _ms(many[key]), f"{many[key] / one[key]:.2f}x", target, met])
    rows.append(
        [
            "req/s (median round)",
            f"{one['rate']:,.0f}",
            f"{many['rate']:,.0f}",
            f"{many['rate'] / one['rate']:.2f}x",
            "—",
            "—",
        ]
    )
    for count in (single, multi):
        errors = Counter[str]()
        for r in rounds[count]:
            errors.update(r.errors)
        if errors:
            rows.append(
                [f"errors, {count} worker(s)", ", ".join(f"{k}: {v}" for k, v in errors.items()), "", "", "", ""]
            )
    everything = [r for rs in rounds.values() for r in rs]
    failed = sum(sum(r.errors.values()) for r in everything)
    sent = sum(len(r.latencies) for r in everything) + failed
    headers = ["figure", "1 worker", f"{multi} workers", f"{multi} ÷ 1", "target", "met"]
    print(markdown_table(headers, rows))
    print()
    print(f"- errors: {failed} of {sent:,} requests")
    reopened = sum(r.reopened for r in everything)
    print(f"- idle connections the server had closed (keep-alive timeout) and the client opened again: {reopened}")
    for count in (single, multi):
        spreads = " ; ".join(" / ".join(str(n) for n in r.spread) for r in rounds[count])
        print(f"- connections each worker accepted, {count} worker(s), by round: {spreads}")
    print()
    print("CPU seconds per round (mean; 2 cores give at most 2 CPU seconds per wall second):")
    print()
    names = ["registry-1", f"registry-{multi}", "postgres", "load generators"]
    cpu_rows = []
    for count in (single, multi):
        samples = rounds[count]
        mean = {k: statistics.mean(r.cpu.get(k, 0.0) for r in samples) for k in samples[0].cpu}
        ours = sum(mean.get(name, 0.0) for name in names)
        cpu_rows.append(
            [
                f"{count} worker(s)",
                f"{mean['wall']:.2f}",
                *(f"{mean.get(name, 0.0):.2f}" for name in names),
                f"{max(0.0, mean['machine'] - ours):.2f}",
            ]
        )
    print(markdown_table(["burst against", "wall s", *names, "other processes"], cpu_rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=2000, help="model files to seed (default 2000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the second registry (default 2)")
    parser.add_argument("--clients", type=int, default=200, help="concurrent clients (default 200)")
    parser.add_argument("--gets", type=int, default=20, help="GETs per client (default 20)")
    parser.add_argument("--processes", type=int, default=4, help="load-generator processes (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="bursts per configuration (default 3)")
    parser.add_argument("--keep", action="store_true", help="leave the temporary directory (logs, data) behind")
    args = parser.parse_args()
    if args.workers < 2 or args.processes < 1 or args.clients < args.processes or args.rounds < 1:
        parser.error("need --workers ≥ 2, --processes ≥ 1, --clients ≥ --processes, --rounds ≥ 1")
    defaults = {"models": 2000, "workers": 2, "clients": 200, "gets": 20, "processes": 4, "rounds": 3}
    command = "python bench/burst.py" + "".join(
        f" --{name} {getattr(args, name)}" for name, value in defaults.items() if getattr(args, name) != value
    )
    sigterm_raises_interrupt()

    def log(message: str) -> None:
        STDERR.print(f"[dim]{message}[/dim]")

    with contextlib.ExitStack() as cleanup:
        root: Path = cleanup.enter_context(scratch_dir("mh-burst-", keep=args.keep, log=log))
        stack = cleanup.enter_context(BenchStack(root))
        stack.start(log)
        db = stack.database("modelhub_registry")
        secret = secrets.token_urlsafe(48)
        s3 = stack.s3_endpoint
        common: dict[str, object] = {
            "host": "127.0.0.1",
            "log_level": "WARNING",
            "nats_url": stack.nats.url,
            "jwt_secret": secret,
            "database_url": db,
            "s3_endpoint": s3.endpoint,
            "s3_access_key": s3.access_key,
            "s3_secret_key": s3.secret_key,
            "connection_sync_seconds": 0,
        }
        applied = asyncio.run(bootstrap.run_migrations(RegistrySettings(**common, port=0)))
        log(f"migrations applied: {', '.join(applied)}")
        registries: dict[int, ServiceProcess] = {}
        for count in (1, args.workers):
            values = {**common, "port": pick_free_port(), "workers": count}
            registries[count] = registry = ServiceProcess(
                root / f"registry-{count}",
                module="modelhub_registry",
                env=service_env(ENV_PREFIX, values),
                port=int(str(values["port"])),
                name=f"registry-{count}",
            )
            cleanup.callback(registry.stop)
            registry.start()
            log(f"registry with {count} worker(s) ready on port {registry.port} (pid {registry.recorded_pid()})")

        tokens = {
            who: issue_token(
                secret,
                subject=who,
                role="admin" if who == ADMIN else "user",
                groups=OWNER_GROUPS.get(who, VIEWER_GROUPS if who == VIEWER else ()),
                ttl_seconds=24 * 3600,
            )
            for who in (*OWNERS, VIEWER, ADMIN)
        }
        ids = asyncio.run(seed_models(registries[1].base_url, db, stack.nats.url, tokens, args.models))
        log(f"seeded {args.models:,} model files ({len(ids):,} readable by the viewer)")
        meter = CpuMeter(
            {f"registry-{count}": registry.recorded_pid() or 0 for count, registry in registries.items()}
            | {"postgres": stack.processes().get("postgres", 0)}
        )
        load_before = os.getloadavg()[0]
        rounds: dict[int, list[Round]] = {count: [] for count in registries}
        for n in range(args.rounds):
            for count, registry in registries.items():
                result = burst(registry.base_url, tokens[VIEWER], ids, args, seed=n * 10 + count, meter=meter)
                rounds[count].append(result)
                log(
                    f"round {n + 1}, {count} worker(s): p50 {_ms(percentile(result.latencies, 50))}, "
                    f"p99 {_ms(percentile(result.latencies, 99))}, {result.rate:,.0f} req/s, "
                    f"{sum(result.errors.values())} errors, connections per worker {result.spread}"
                )
        print_results(args, rounds, command, (load_before, os.getloadavg()[0]))
        log("stopping the registries and the servers")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        STDERR.print("interrupted; every server was stopped")
        raise SystemExit(130) from None
