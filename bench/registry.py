"""The registry under load: list, get, create, export, import and create→event latency on 10,000 model files.

    .venv/bin/python bench/registry.py [--models N] [--quick] [--keep] [--concurrency C] [--no-fsync]
                                       [--no-analyze]

One run starts real NATS (JetStream), PostgreSQL+pgvector and SeaweedFS S3 on free loopback ports in a
temporary directory, migrates, and runs the registry as its own process (`python -m modelhub_registry
serve`), so the benchmark's httpx clients and the server never share a GIL. It then seeds model files
through the API (a few owners, grants, public, hidden and disabled ones, chains, so the access filter has
real work to do) and measures each figure of issue 3 next to its target and next to a baseline taken in the
same run against the same servers:

* request latencies (list, get) against `GET /healthz` on the same server, which does no database work:
  the ratio shows how much of the latency is more than HTTP and process overhead;
* creates/s against raw `INSERT`s of the same rows straight into PostgreSQL with psycopg, same concurrency;
* export against psycopg reading the same rows; import against raw `INSERT`s of 1,000 rows in one
  transaction; create→event (creates one at a time, and every create of the seed with 8 in flight) against
  a JetStream publish→delivery on the same NATS server.

Reads are measured after a `VACUUM (ANALYZE)` (what autovacuum does shortly after a bulk load); a table of
CPU seconds per phase (client, registry, PostgreSQL, NATS, S3 and everything else on the machine) shows
where the time went and how much other work skewed the run.

Progress goes to stderr, the markdown tables to stdout. Every process started is stopped by its PID at the
end, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import nats
import psycopg
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
from nats.aio.msg import Msg
from nats.js import api
from psycopg.types.json import Jsonb
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from modelhub_common.auth import issue_token
from modelhub_common.events import MODELS, decode_envelope
from modelhub_devstack import pick_free_port
from modelhub_registry import bootstrap
from modelhub_registry.settings import ENV_PREFIX, RegistrySettings

STDERR = Console(stderr=True)

BASE_MODELS = ("llama3.1:8b", "qwen2.5:7b-instruct", "gemma3:270m")
OWNERS = ("alice", "bob", "carol", "dave")
OWNER_GROUPS = {"alice": ("research",), "bob": ("support",), "carol": (), "dave": ("research", "support")}
# The "normal user" of the list and get figures owns nothing: every row it sees passes the grant or
# public branch of the access filter, the expensive ones.
VIEWER, VIEWER_GROUPS = "erin", ("research",)
ADMIN = "root"
TAGS = (
    "coding", "writing", "math", "support", "legal", "medical", "finance", "education",
    "translation", "summaries", "research", "creative", "sql", "devops", "vision", "chat",
)  # fmt: skip
TOPICS = (
    "kubernetes", "poetry", "algebra", "invoices", "contracts", "radiology", "budgets", "physics",
    "spanish", "meetings", "biology", "screenplays", "postgres", "terraform", "photos", "smalltalk",
)  # fmt: skip
ADJECTIVES = ("careful", "friendly", "terse", "patient", "rigorous", "playful", "formal", "curious")
IMPORT_ITEMS = 1_000
CHAIN_OFFSET = 32  # a multiple of len(OWNERS), and never itself a chained index (i % 10 == 5)
FULL = {"models": 10_000, "list": 300, "get": 1_000, "health": 1_000, "events": 200}
QUICK = {"models": 1_000, "list": 60, "get": 200, "health": 200, "events": 40}
WARMUP = 20


# ---- the model files


def model_spec(i: int, rng: random.Random, *, prefix: str = "") -> dict[str, Any]:
    """Model file ``i``: deterministic for a given ``rng``, with the mix of access and flags the filter sees."""
    owner = OWNERS[i % len(OWNERS)]
    topic, adjective = rng.choice(TOPICS), rng.choice(ADJECTIVES)
    model_id = f"{prefix}{owner}-{topic}-{i:05d}"
    if i % 10 == 9:  # ids with '/' and ':' must work in URLs
        model_id = f"{prefix}hf.co/{owner}/{topic}-{i:05d}:Q4_K_M"
    base = rng.choice(BASE_MODELS)
    access: dict[str, Any] = {"public_read": i % 10 == 3, "grants": []}
    if i % 10 == 1:
        access["grants"].append({"principal_type": "user", "principal_id": VIEWER, "permission": "read"})
    if i % 10 == 2:
        access["grants"].append({"principal_type": "group", "principal_id": "research", "permission": "read"})
    if i % 25 == 4:
        access["grants"].append({"principal_type": "user", "principal_id": "bob", "permission": "write"})
    return {
        "id": model_id,
        "base_model_id": base,
        "name": f"{adjective.title()} {topic} helper {i}",
        "params": {
            "system": (
                f"You are a {adjective} assistant for {topic}. Address the user as {{{{ USER_NAME }}}}; "
                f"today is {{{{ CURRENT_DATE }}}}. " + "Answer precisely and cite your sources. " * rng.randint(2, 8)
            ),
            "temperature": round(rng.uniform(0, 1.5), 2),
            "top_p": 0.9,
            "num_ctx": rng.choice((2048, 4096, 8192)),
            **({"stop": ["</s>", "<|eot_id|>"]} if i % 3 == 0 else {}),
        },
        "meta": {
            "description": f"A {adjective} model for {topic}, tuned by {owner}.",
            "tags": rng.sample(TAGS, rng.randint(1, 3)),
            "capabilities": {"vision": i % 7 == 0, "citations": True},
            "suggestion_prompts": [{"title": ["Explain", topic], "content": f"Explain {topic} to a beginner."}],
        },
        "hidden": i % 33 == 5,
        "enabled": i % 50 != 7,
        "access": access,
    }


def with_chains(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One in ten is built on an earlier model file of the same owner (32 back, itself built on a base
    model), so that create, get and export walk a chain."""
    for i, spec in enumerate(specs):
        if i >= CHAIN_OFFSET and i % 10 == 5:
            spec["base_model_id"] = specs[i - CHAIN_OFFSET]["id"]
    return specs


def readable_by_viewer(spec: dict[str, Any]) -> bool:
    access = spec["access"]
    return access["public_read"] or any(
        (g["principal_type"] == "user" and g["principal_id"] == VIEWER)
        or (g["principal_type"] == "group" and g["principal_id"] in VIEWER_GROUPS)
        for g in access["grants"]
    )


def raw_row(spec: dict[str, Any], owner: str, stamp: datetime) -> tuple[Any, ...]:
    """The ``models`` row the registry writes for ``spec``, for the raw-INSERT baselines."""
    meta = spec["meta"]
    return (
        spec["id"],
        spec["base_model_id"],
        spec["name"],
        Jsonb(spec["params"]),
        Jsonb(meta),
        meta["tags"],
        meta["description"],
        spec["hidden"],
        spec["enabled"],
        owner,
        spec["access"]["public_read"],
        stamp,
        stamp,
        1,
    )


RAW_TABLE = "bench_raw_models"
RAW_INSERT = (
    f"INSERT INTO {RAW_TABLE} (id, base_model_id, name, params, meta, tags, description, hidden, enabled,"
    " owner_id, public_read, created_at, updated_at, version)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
# The rows an export needs (grants aggregated per model), read by psycopg without the registry.
RAW_EXPORT_SELECT = """
SELECT m.*, COALESCE((SELECT json_agg(json_build_object('principal_type', g.principal_type,
        'principal_id', g.principal_id, 'permission', g.permission))
        FROM model_grants g WHERE g.model_id = m.id), '[]'::json) AS grants
FROM models m ORDER BY m.id
"""


# ---- measurement helpers


@dataclass
class Figure:
    """One row of the results table."""

    name: str
    value: float
    unit: str
    target: str = "—"
    met: bool | None = None
    baseline_name: str = ""
    baseline: float | None = None

    def cells(self) -> list[str]:
        ratio = "—"
        if self.baseline:
            ratio = f"{self.value / self.baseline:.2f}x"
        met = "—" if self.met is None else ("yes" if self.met else "**no**")
        baseline = "—" if self.baseline is None else _fmt(self.baseline, self.unit)
        return [self.name, _fmt(self.value, self.unit), self.target, met, self.baseline_name or "—", baseline, ratio]


def event_figures(samples: list[float], transport: list[float], when: str = "") -> list[Figure]:
    """p50 and p99 of create → event delivered (seconds), p99 against the 100 ms target, beside JetStream alone."""
    figures = []
    for pct in (50, 99):
        value = percentile(samples, pct)
        figures.append(
            Figure(
                f"create→event delivered p{pct}{when}",
                value,
                "ms",
                "≤ 100 ms" if pct == 99 else "—",
                value <= 0.100 if pct == 99 else None,
                f"JetStream publish→delivery p{pct}",
                percentile(transport, pct),
            )
        )
    return figures


def _fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value * 1000:.2f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    return f"{value:,.0f} {unit}"


@dataclass
class Phase:
    name: str
    requests: int
    cpu: dict[str, float]


@dataclass
class Results:
    figures: list[Figure] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class CreatedEvents:
    """A JetStream push subscriber on ``modelhub.models.v1.created`` (new messages only) that records when
    each model's event arrived, on this process's clock."""

    def __init__(self, nats_url: str) -> None:
        self.nats_url = nats_url
        self.arrived: dict[str, float] = {}
        self._waiting: dict[str, asyncio.Future[float]] = {}
        self._nc: nats.NATS | None = None

    async def __aenter__(self) -> CreatedEvents:
        self._nc = await nats.connect(self.nats_url, name="bench-registry-events")
        await self._nc.jetstream().subscribe(
            MODELS.subject("created"),
            stream=MODELS.stream,
            cb=self._on_created,
            config=api.ConsumerConfig(ack_policy=api.AckPolicy.NONE),
            deliver_policy=api.DeliverPolicy.NEW,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._nc is not None:
            await self._nc.close()

    async def _on_created(self, msg: Msg) -> None:
        now = time.perf_counter()
        model_id = decode_envelope(msg.data).subject_ids.model_id
        self.arrived[model_id] = now
        future = self._waiting.pop(model_id, None)
        if future is not None and not future.done():
            future.set_result(now)

    async def arrival(self, model_id: str, timeout: float = 30) -> float:
        """When the created event of ``model_id`` arrived (waiting for it if need be)."""
        if model_id in self.arrived:
            return self.arrived[model_id]
        future = self._waiting.setdefault(model_id, asyncio.get_running_loop().create_future())
        try:
            return await asyncio.wait_for(future, timeout=timeout)
        except TimeoutError:
            raise SystemExit(f"no created event for {model_id} within {timeout:.0f} s") from None


class Bench:
    def __init__(
        self,
        client: httpx.AsyncClient,
        meter: CpuMeter,
        database_url: str,
        nats_url: str,
        tokens: dict[str, str],
        concurrency: int,
    ) -> None:
        self.client = client
        self.meter = meter
        self.database_url = database_url
        self.nats_url = nats_url
        self.tokens = tokens
        self.concurrency = concurrency
        self.results = Results()

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    async def phase(self, name: str, requests: int, work: Awaitable[Any]) -> Any:
        before = self.meter.snapshot()
        result = await work
        self.results.phases.append(Phase(name, requests, CpuMeter.delta(before, self.meter.snapshot())))
        return result

    async def latencies(self, requests: Sequence[tuple[str, dict[str, str], dict[str, str]]]) -> list[float]:
        """One request at a time (no queueing in the numbers): seconds from send to the last body byte."""
        samples: list[float] = []
        for n, (path, params, headers) in enumerate([*requests[:WARMUP], *requests]):
            started = time.perf_counter()
            response = await self.client.get(path, params=params, headers=headers)
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                raise SystemExit(f"GET {path} {params} answered {response.status_code}: {response.text[:300]}")
            if n >= WARMUP:
                samples.append(elapsed)
        return samples

    async def concurrently(self, items: Iterable[Any], work: Callable[[Any], Awaitable[None]]) -> float:
        """Runs ``work`` on every item with ``concurrency`` in flight; returns the wall time."""
        pending = iter(items)

        async def worker() -> None:
            for item in pending:  # one shared iterator: each item is taken by exactly one worker
                await work(item)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        return time.perf_counter() - started

    # ---- phases

    async def register_base_models(self) -> None:
        for base in BASE_MODELS:
            response = await self.client.post(
                "/api/v1/base-models", json={"id": base, "params": {"temperature": 0.8}}, headers=self.auth(ADMIN)
            )
            if response.status_code != 201:
                raise SystemExit(f"registering base model {base} failed: {response.status_code} {response.text}")

    async def seed(self, specs: list[dict[str, Any]]) -> tuple[float, dict[str, float], int]:
        """Creates every model file through the API; returns the wall time, when each POST was sent and the
        largest outbox backlog seen meanwhile."""
        progress = Progress(
            TextColumn("seeding model files"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[backlog]}"),
            TimeRemainingColumn(),
            console=STDERR,
        )
        with progress:
            task = progress.add_task("seed", total=len(specs), rate="", backlog="")
            started = time.perf_counter()
            done = 0
            created = {spec["id"]: asyncio.Event() for spec in specs}
            sent: dict[str, float] = {}

            async def create(index: int) -> None:
                nonlocal done
                spec = specs[index]
                owner = OWNERS[index % len(OWNERS)]
                base = created.get(spec["base_model_id"])
                if base is not None:  # built on a model file that may still be in flight
                    await base.wait()
                sent[spec["id"]] = time.perf_counter()
                response = await self.client.post("/api/v1/models", json=spec, headers=self.auth(owner))
                if response.status_code != 201:
                    raise SystemExit(f"create {spec['id']} answered {response.status_code}: {response.text[:300]}")
                created[spec["id"]].set()
                done += 1
                rate = f"{done / (time.perf_counter() - started):,.0f}/s"
                progress.update(task, advance=1, rate=rate)

            backlog: list[int] = [0]
            stop = asyncio.Event()

            async def watch_backlog() -> None:
                async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as conn:
                    while not stop.is_set():
                        cur = await conn.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                        row = await cur.fetchone()
                        backlog.append(int(row[0]) if row else 0)
                        progress.update(task, backlog=f"outbox backlog {backlog[-1]:,}")
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), timeout=0.5)

            backlog_task = asyncio.create_task(watch_backlog())
            try:
                elapsed = await self.phase(
                    f"seed {len(specs):,} creates", len(specs), self.concurrently(range(len(specs)), create)
                )
            finally:
                stop.set()
                await backlog_task
        return float(elapsed), sent, max(backlog)

    async def raw_insert_rate(self, specs: list[dict[str, Any]]) -> float:
        """Rows/s of plain INSERTs (one per transaction) of the same rows, ``concurrency`` connections."""
        async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as admin:
            await admin.execute(f"DROP TABLE IF EXISTS {RAW_TABLE}")
            await admin.execute(f"CREATE TABLE {RAW_TABLE} (LIKE models INCLUDING ALL)")
        connections = [
            await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) for _ in range(self.concurrency)
        ]
        free: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()
        for conn in connections:
            free.put_nowait(conn)
        stamp = datetime.now(UTC)

        async def insert(index: int) -> None:
            conn = await free.get()
            try:
                await conn.execute(RAW_INSERT, raw_row(specs[index], OWNERS[index % len(OWNERS)], stamp))
            finally:
                free.put_nowait(conn)

        try:
            elapsed = await self.phase(
                f"baseline: {len(specs):,} raw INSERTs", len(specs), self.concurrently(range(len(specs)), insert)
            )
        finally:
            for conn in connections:
                await conn.close()
        return len(specs) / float(elapsed)

    async def raw_import_time(self, specs: list[dict[str, Any]]) -> float:
        """Seconds to INSERT ``specs`` as rows in one transaction (the floor under an import)."""
        stamp = datetime.now(UTC)
        async with await psycopg.AsyncConnection.connect(self.database_url) as conn:
            await conn.execute(f"TRUNCATE {RAW_TABLE}")
            await conn.commit()
            started = time.perf_counter()
            async with conn.cursor() as cur:
                await cur.executemany(
                    RAW_INSERT, [raw_row(spec, OWNERS[i % len(OWNERS)], stamp) for i, spec in enumerate(specs)]
                )
            await conn.commit()
            elapsed = time.perf_counter() - started
            await conn.execute(f"DROP TABLE {RAW_TABLE}")
            await conn.commit()
        return elapsed

    async def raw_export_time(self) -> tuple[float, int]:
        async with await psycopg.AsyncConnection.connect(self.database_url) as conn:
            started = time.perf_counter()
            cur = await conn.execute(RAW_EXPORT_SELECT)
            rows = await cur.fetchall()
            return time.perf_counter() - started, len(rows)

    async def stream_usage(self) -> tuple[int, int]:
        """Messages and bytes (headers included) on the models stream: what an event costs JetStream's storage."""
        nc = await nats.connect(self.nats_url, name="bench-registry-stream-info")
        try:
            info = await nc.jetstream().stream_info(MODELS.stream)
            return info.state.messages, info.state.bytes
        finally:
            await nc.close()

    async def outbox_backlog(self) -> int:
        async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as conn:
            cur = await conn.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def wait_for_relay(self, timeout: float = 300) -> float:
        """Seconds until the outbox relay has published every committed event."""
        started = time.perf_counter()
        while await self.outbox_backlog():
            if time.perf_counter() - started > timeout:
                raise SystemExit(f"the outbox still had unpublished events after {timeout:.0f} s")
            await asyncio.sleep(0.05)
        return time.perf_counter() - started

    async def vacuum_analyze(self) -> float:
        """What autovacuum does within a minute or two of a bulk load: fresh planner statistics and a
        visibility map. Without it the reads right after seeding are planned blind."""
        started = time.perf_counter()
        async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as conn:
            await conn.execute("VACUUM (ANALYZE) models, model_grants, model_revisions, outbox")
        return time.perf_counter() - started

    async def export_all(self) -> tuple[float, list[dict[str, Any]]]:
        started = time.perf_counter()
        async with self.client.stream("GET", "/api/v1/models/export", headers=self.auth(ADMIN)) as response:
            body = await response.aread()
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise SystemExit(f"export answered {response.status_code}: {body[:300]!r}")
        items: list[dict[str, Any]] = json.loads(body)
        return elapsed, items

    async def import_items(self, items: list[dict[str, Any]]) -> float:
        body = json.dumps(items).encode()
        started = time.perf_counter()
        response = await self.client.post(
            "/api/v1/models/import",
            content=body,
            params={"mode": "create"},
            headers={**self.auth(ADMIN), "Content-Type": "application/json"},
        )
        elapsed = time.perf_counter() - started
        if response.status_code != 200 or len(response.json()["created"]) != len(items):
            raise SystemExit(f"import answered {response.status_code}: {response.text[:500]}")
        return elapsed

    async def event_latencies(
        self, watcher: CreatedEvents, specs: list[dict[str, Any]]
    ) -> tuple[list[float], list[float]]:
        """(send→event delivered, send→response) for creates made one at a time."""
        to_event: list[float] = []
        to_response: list[float] = []
        for n, spec in enumerate(specs):
            owner = OWNERS[n % len(OWNERS)]
            sent = time.perf_counter()
            response = await self.client.post("/api/v1/models", json=spec, headers=self.auth(owner))
            answered = time.perf_counter()
            if response.status_code != 201:
                raise SystemExit(f"create {spec['id']} answered {response.status_code}: {response.text[:300]}")
            to_event.append(await watcher.arrival(spec["id"]) - sent)
            to_response.append(answered - sent)
        return to_event, to_response

    async def jetstream_baseline(self, count: int) -> list[float]:
        """Publish (with ack, as the relay does) → delivery to a push subscriber, on the same NATS server."""
        nc = await nats.connect(self.nats_url, name="bench-registry-baseline")
        stream, subject = "BENCH_PROBE", "bench.probe.created"
        arrived: dict[str, asyncio.Future[float]] = {}

        async def on_msg(msg: Msg) -> None:
            future = arrived.get(msg.data.decode())
            if future is not None and not future.done():
                future.set_result(time.perf_counter())

        samples: list[float] = []
        try:
            js = nc.jetstream()
            await js.add_stream(name=stream, subjects=["bench.probe.>"])
            sub = await js.subscribe(
                subject,
                stream=stream,
                cb=on_msg,
                config=api.ConsumerConfig(ack_policy=api.AckPolicy.NONE),
                deliver_policy=api.DeliverPolicy.NEW,
            )
            for n in range(WARMUP + count):
                key = f"probe-{n}"
                arrived[key] = asyncio.get_running_loop().create_future()
                sent = time.perf_counter()
                await js.publish(subject, key.encode(), headers={"Nats-Msg-Id": key})
                delivered = await asyncio.wait_for(arrived[key], timeout=10)
                if n >= WARMUP:
                    samples.append(delivered - sent)
            await sub.unsubscribe()
            await js.delete_stream(stream)
        finally:
            await nc.close()
        return samples


# ---- the run


async def run(
    args: argparse.Namespace,
    sizes: dict[str, int],
    registry: ServiceProcess,
    stack: BenchStack,
    db: str,
    tokens: dict[str, str],
) -> Results:
    rng = random.Random(20240601)
    count = sizes["models"]
    specs = with_chains([model_spec(i, rng) for i in range(count)])
    meter = CpuMeter({"registry": registry.recorded_pid() or 0, **stack.processes()})
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with (
        httpx.AsyncClient(base_url=registry.base_url, timeout=120, limits=limits) as client,
        CreatedEvents(stack.nats.url) as watcher,
    ):
        bench = Bench(client, meter, db, stack.nats.url, tokens, args.concurrency)
        res = bench.results
        await bench.register_base_models()
        res.notes.append(
            f"1-minute load average before seeding: {os.getloadavg()[0]:.2f}"
            " (anything else running on the machine skews every figure)"
        )

        # -- creates
        seed_seconds, sent, max_backlog = await bench.seed(specs)
        creates_per_second = count / seed_seconds
        left_at_end = await bench.outbox_backlog()
        max_backlog = max(max_backlog, left_at_end)
        relay_lag = await bench.wait_for_relay()
        # The subscriber shares this process's event loop with the requests in flight, so an arrival may be
        # stamped a little late; the relay's backlog dominates anyway.
        under_load = [await watcher.arrival(model_id) - at for model_id, at in sent.items()]
        during = count - left_at_end
        tail = (
            f"the {left_at_end:,} left when the last create returned took {relay_lag:.2f} s "
            f"({left_at_end / relay_lag if relay_lag else 0:,.0f}/s with no requests competing)"
            if left_at_end
            else "nothing was left when the last create returned"
        )
        res.notes.append(
            f"outbox relay: while seeding it published {during:,} events ({during / seed_seconds:,.0f}/s against "
            f"{creates_per_second:,.0f} creates/s); the backlog peaked at {max_backlog:,} events; {tail}"
        )
        events, stored = await bench.stream_usage()
        if events:
            res.notes.append(
                f"stream storage: {events:,} events take {stored / 2**20:,.1f} MiB on the {MODELS.stream} stream, "
                f"{stored / events:,.0f} bytes per event with its headers (the capacity plan's s_event)"
            )
        raw_rate = await bench.raw_insert_rate(specs)
        res.figures.append(
            Figure(
                f"creates/s ({args.concurrency} in flight, {count:,} creates)",
                creates_per_second,
                "/s",
                "≥ 300 /s",
                creates_per_second >= 300,
                f"raw INSERT/s, {args.concurrency} connections",
                raw_rate,
            )
        )

        # -- request latencies, against /healthz on the same server
        if args.no_analyze:
            res.notes.append("reads measured right after seeding, before autovacuum analyzed the new rows")
        else:
            vacuum_seconds = await bench.vacuum_analyze()
            res.notes.append(
                f"after seeding, `VACUUM (ANALYZE)` of the registry's tables ({vacuum_seconds:.2f} s), as autovacuum"
                " would do within a minute or two, so that reads are measured in a steady state"
            )
        health = await bench.phase(
            "baseline: GET /healthz",
            sizes["health"],
            bench.latencies([("/healthz", {}, bench.auth(VIEWER))] * sizes["health"]),
        )
        health_p50, health_p99 = percentile(health, 50), percentile(health, 99)

        def latency_rows(label: str, samples: list[float], p50_target: float | None, p99_target: float | None) -> None:
            for pct, target, base in ((50, p50_target, health_p50), (99, p99_target, health_p99)):
                value = percentile(samples, pct)
                res.figures.append(
                    Figure(
                        f"{label} p{pct}",
                        value,
                        "ms",
                        f"≤ {target * 1000:.0f} ms" if target is not None else "—",
                        value <= target if target is not None else None,
                        f"GET /healthz p{pct}",
                        base,
                    )
                )

        n_list = sizes["list"]
        for who, label in ((VIEWER, "user"), (ADMIN, "admin")):
            for kind, values in (("", [""]), ("q", list(TOPICS)), ("tag", list(TAGS))):
                requests = [
                    (
                        "/api/v1/models",
                        {"limit": "50", **({kind: values[k % len(values)]} if kind else {})},
                        bench.auth(who),
                    )
                    for k in range(n_list)
                ]
                what = f"list 50, {label}" + (f", {kind}=…" if kind else "")
                samples = await bench.phase(what, n_list, bench.latencies(requests))
                latency_rows(what, samples, 0.010, 0.030)

        n_get = sizes["get"]
        pick = random.Random(7)
        readable = [s["id"] for s in specs if readable_by_viewer(s)]
        for who, label, pool in ((VIEWER, "user", readable), (ADMIN, "admin", [s["id"] for s in specs])):
            requests = [(f"/api/v1/models/{pick.choice(pool)}", {}, bench.auth(who)) for _ in range(n_get)]
            samples = await bench.phase(f"get, {label}", n_get, bench.latencies(requests))
            latency_rows(f"get one, {label}", samples, 0.003, None)

        # -- export and import
        rounds = 5 if args.quick else 15
        exports: list[float] = []
        for _ in range(rounds):
            export_seconds, items = await bench.phase("export all", 1, bench.export_all())
            if len(items) != count:
                raise SystemExit(f"the export has {len(items)} models, expected {count}")
            exports.append(export_seconds)
        raw_export_seconds, raw_rows = await bench.raw_export_time()
        for pct in (50, 99):
            value = percentile(exports, pct)
            target_met = value <= 0.120 * count / 2_000 if pct == 50 else None
            res.figures.append(
                Figure(
                    f"export all p{pct} ({count:,} models, admin, {rounds} rounds)",
                    value,
                    "ms",
                    "≤ 120 ms at 2,000 (scaled)" if pct == 50 else "—",
                    target_met,
                    f"psycopg SELECT of the {raw_rows:,} rows + grants",
                    raw_export_seconds,
                )
            )
        n_import = min(IMPORT_ITEMS, count)
        to_import = []
        for item in items[:n_import]:
            new_id = f"imported/{item['id']}"
            grants = [{**g, "resource_id": new_id} for g in item.get("access_grants") or []]
            to_import.append({**item, "id": new_id, "access_grants": grants})
        import_seconds = await bench.phase(f"import {n_import:,}", 1, bench.import_items(to_import))
        raw_import_seconds = await bench.raw_import_time(specs[:n_import])
        res.figures.append(
            Figure(
                f"import {n_import:,} models (one request)",
                import_seconds,
                "s",
                "≤ 3 s" if n_import >= 1_000 else "(≤ 3 s for 1k)",
                import_seconds <= 3 * n_import / 1_000,
                f"raw INSERT of {n_import:,} rows, one transaction",
                raw_import_seconds,
            )
        )

        # -- create → event delivered
        await bench.wait_for_relay()
        probe_rng = random.Random(99)
        probes = [model_spec(count + k, probe_rng, prefix="event-") for k in range(sizes["events"])]
        to_event, to_response = await bench.phase(
            f"{len(probes)} creates, one at a time, until each event arrives",
            len(probes),
            bench.event_latencies(watcher, probes),
        )
        transport = await bench.jetstream_baseline(len(probes))
        res.figures += event_figures(to_event, transport)
        res.figures += event_figures(under_load, transport, f" while seeding ({args.concurrency} in flight)")
        for pct in (50, 99):
            value = percentile(to_response, pct)
            res.figures.append(
                Figure(
                    f"create request alone p{pct} (same creates)",
                    value,
                    "ms",
                    baseline_name=f"GET /healthz p{pct}",
                    baseline=health_p50 if pct == 50 else health_p99,
                )
            )
    return res


def print_results(res: Results, args: argparse.Namespace, sizes: dict[str, int], durable: bool, command: str) -> None:
    print(f"### registry on {sizes['models']:,} model files")
    print()
    print(f"`{command}` — {machine_summary()}.")
    print(
        f"PostgreSQL 18 {'with fsync and synchronous_commit on (as the dev stack)' if durable else 'with fsync off'}, "
        f"registry with its default pool (10 connections), one process, `MODELHUB_REGISTRY_LOG_LEVEL=WARNING`. "
        f"Latencies: one request at a time after {WARMUP} warm-up requests, send → last body byte, httpx client "
        f"in another process; list {sizes['list']} requests per row, get {sizes['get']}, /healthz {sizes['health']}, "
        f"events {sizes['events']}."
    )
    print()
    headers = ["figure", "registry", "target", "met", "baseline (same run, same servers)", "baseline", "ratio"]
    print(markdown_table(headers, [f.cells() for f in res.figures]))
    print()
    for note in res.notes:
        print(f"- {note}")
    print()
    print(
        "Where the CPU went (CPU seconds per phase; 2 cores give at most 2 CPU seconds per wall second;"
        " `other processes` is whatever else ran on the machine meanwhile):"
    )
    print()
    names = ["client", "registry", "postgres", "nats", "s3"]
    rows = []
    for phase in res.phases:
        per_request = phase.cpu["registry"] / phase.requests * 1000 if phase.requests > 1 else None
        ours = sum(phase.cpu.get(name, 0.0) for name in names)
        others = max(0.0, phase.cpu["machine"] - ours)
        rows.append(
            [
                phase.name,
                f"{phase.cpu['wall']:.2f}",
                *(f"{phase.cpu.get(name, 0.0):.2f}" for name in names),
                f"{others:.2f}",
                f"{per_request:.2f}" if per_request is not None else "—",
            ]
        )
    print(markdown_table(["phase", "wall s", *names, "other processes", "registry CPU ms/request"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, help="model files to seed (default 10000; 1000 with --quick)")
    parser.add_argument("--quick", action="store_true", help="1,000 models and fewer samples, for smoke runs")
    parser.add_argument("--keep", action="store_true", help="leave the temporary directory (logs, data) behind")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight while seeding (default 8)")
    parser.add_argument(
        "--no-fsync", action="store_true", help="run PostgreSQL with fsync off (the test fixtures' setting)"
    )
    parser.add_argument(
        "--no-analyze",
        action="store_true",
        help="measure reads right after seeding, before the tables are analyzed (default: VACUUM ANALYZE first)",
    )
    args = parser.parse_args()
    sizes = dict(QUICK if args.quick else FULL)
    if args.models is not None:
        if args.models < 1:
            parser.error("--models must be at least 1")
        sizes["models"] = args.models
    command = "python bench/registry.py" + "".join(
        flag
        for flag, on in (
            (" --quick", args.quick),
            (f" --models {args.models}", args.models is not None),
            (f" --concurrency {args.concurrency}", args.concurrency != 8),
            (" --no-fsync", args.no_fsync),
            (" --no-analyze", args.no_analyze),
        )
        if on
    )
    sigterm_raises_interrupt()

    def log(message: str) -> None:
        STDERR.print(f"[dim]{message}[/dim]")

    with contextlib.ExitStack() as cleanup:
        root = cleanup.enter_context(scratch_dir("mh-bench-", keep=args.keep, log=log))
        stack = cleanup.enter_context(BenchStack(root, durable_postgres=not args.no_fsync))
        stack.start(log)
        db = stack.database("modelhub_registry")
        secret = secrets.token_urlsafe(48)
        values: dict[str, object] = {
            **stack.service_values(db, secret),
            "port": pick_free_port(),
            "connection_sync_seconds": 0,
            # One process, as every figure here was measured (bench/burst.py compares worker counts).
            "workers": 1,
        }
        settings = RegistrySettings(**values)  # type: ignore[arg-type]
        applied = asyncio.run(bootstrap.run_migrations(settings))
        log(f"migrations applied: {', '.join(applied)}")
        registry = ServiceProcess(
            root / "registry",
            module="modelhub_registry",
            env=service_env(ENV_PREFIX, values),
            port=settings.port,
            name="registry",
        )

        def stop_registry() -> None:
            began = time.perf_counter()
            if registry.stop():
                log(f"registry stopped in {time.perf_counter() - began:.2f} s")

        cleanup.callback(stop_registry)
        began = time.perf_counter()
        registry.start()
        log(f"registry ready in {time.perf_counter() - began:.2f} s (pid {registry.recorded_pid()})")
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
        results = asyncio.run(run(args, sizes, registry, stack, db, tokens))
        print_results(results, args, sizes, not args.no_fsync, command)
        log("stopping the registry and the servers")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        STDERR.print("interrupted; every server was stopped")
        raise SystemExit(130) from None
