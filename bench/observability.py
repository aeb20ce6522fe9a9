"""What observability costs: registry GET latency with tracing on vs off, in one run, plus the metrics middleware.

    .venv/bin/python bench/observability.py [--models N] [--rounds R] [--requests K] [--keep]

One run starts real NATS, PostgreSQL and SeaweedFS S3 on free loopback ports, migrates one registry
database and runs three registry processes on it (`python -m modelhub_registry serve`):

* **off**: the default, metrics on (they always are: `/metrics` is part of every app), tracing off;
* **on**: the same with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a local OTLP/HTTP sink this script runs
  (answers 200 to every export), so every request is traced (FastAPI, psycopg) and exported in batches;
* **sampled**: tracing on with `OTEL_TRACES_SAMPLER=parentbased_traceidratio` keeping 10 % of the traces
  (a trace started upstream keeps its caller's decision), as a production deployment would run it.

It seeds model files through the "off" registry, then measures `GET /api/v1/models/{id}` on random ids in
alternating rounds against the three (so drift on a shared machine hits both alike) and prints p50/p99 and the
on/off ratio. The HTTP metrics middleware alone is measured in-process: a trivial route called through ASGI
with and without it (no network, so the difference is the middleware's own cost per request).

Progress goes to stderr, the markdown tables to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from _support import (
    BenchStack,
    ServiceProcess,
    machine_summary,
    markdown_table,
    percentile,
    scratch_dir,
    service_env,
    sigterm_raises_interrupt,
)
from fastapi import FastAPI
from rich.console import Console

from modelhub_common.auth import issue_token
from modelhub_common.metrics import HttpMetricsMiddleware, ServiceMetrics
from modelhub_devstack.ports import pick_free_port
from modelhub_registry import bootstrap
from modelhub_registry.settings import RegistrySettings

ENV_PREFIX = "MODELHUB_REGISTRY_"
STDERR = Console(stderr=True)


class _Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that accepts and drops every export."""

    def do_POST(self) -> None:  # noqa: N802 - the http.server hook's name
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
        self.server.exports += 1  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        return None


#: The share of traces the "sampled" registry keeps.
SAMPLE_RATIO = 0.1


@contextlib.contextmanager
def otlp_sink() -> Any:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    server.exports = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, name="otlp-sink", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


async def measure_get(client: httpx.AsyncClient, ids: list[str], headers: dict[str, str], n: int) -> list[float]:
    rng = random.Random()
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        response = await client.get(f"/api/v1/models/{rng.choice(ids)}", headers=headers)
        samples.append(time.perf_counter() - began)
        if response.status_code != 200:
            raise RuntimeError(f"GET answered {response.status_code}: {response.text[:200]}")
    return samples


async def run_http(urls: dict[str, str], token: str, models: int, rounds: int, requests: int) -> dict[str, list[float]]:
    headers = {"Authorization": f"Bearer {token}"}
    ids = [f"bench-obs-{n}" for n in range(models)]
    async with httpx.AsyncClient(base_url=urls["off"], timeout=60) as seed:
        await seed.post("/api/v1/base-models", json={"id": "llama3.1:8b"}, headers=headers)
        for model_id in ids:
            body = {"id": model_id, "name": model_id, "base_model_id": "llama3.1:8b", "params": {"temperature": 0.2}}
            response = await seed.post("/api/v1/models", json=body, headers=headers)
            if response.status_code != 201:
                raise RuntimeError(f"seeding failed: {response.status_code} {response.text[:200]}")
    samples: dict[str, list[float]] = {name: [] for name in urls}
    clients = {name: httpx.AsyncClient(base_url=url, timeout=60) for name, url in urls.items()}
    try:
        for client in clients.values():  # warm-up: connections, caches, the first traced export
            await measure_get(client, ids, headers, 50)
        for r in range(rounds):
            order = list(urls) if r % 2 == 0 else list(reversed(urls))
            for name in order:
                samples[name] += await measure_get(clients[name], ids, headers, requests)
            STDERR.print(f"[dim]round {r + 1}/{rounds} done[/dim]")
    finally:
        for client in clients.values():
            await client.aclose()
    return samples


async def middleware_cost(calls: int) -> tuple[float, float]:
    """Microseconds per request through ASGI for a trivial route, without and with the metrics middleware."""

    def build(with_metrics: bool) -> Any:
        app = FastAPI()

        @app.get("/api/v1/things/{thing_id}")
        async def thing(thing_id: str) -> dict[str, str]:
            return {"id": thing_id}

        if with_metrics:
            app.add_middleware(HttpMetricsMiddleware, metrics=ServiceMetrics("bench", process_metrics=False))
        return app

    async def time_app(app: Any) -> float:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            return None

        async def call(n: int) -> None:
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": f"/api/v1/things/{n}",
                "raw_path": f"/api/v1/things/{n}".encode(),
                "query_string": b"",
                "root_path": "",
                "headers": [],
                "client": ("127.0.0.1", 1),
                "server": ("127.0.0.1", 80),
            }
            await app(scope, receive, send)

        for n in range(500):
            await call(n)
        began = time.perf_counter()
        for n in range(calls):
            await call(n)
        return (time.perf_counter() - began) / calls * 1e6

    plain, metered = build(False), build(True)
    results = {"plain": [], "metered": []}  # type: dict[str, list[float]]
    for _ in range(5):
        results["plain"].append(await time_app(plain))
        results["metered"].append(await time_app(metered))
    return min(results["plain"]), min(results["metered"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=500, help="model files to seed (default 500)")
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds per registry (default 10)")
    parser.add_argument("--requests", type=int, default=200, help="GETs per round (default 200)")
    parser.add_argument("--keep", action="store_true", help="leave the temporary directory (logs, data) behind")
    args = parser.parse_args()
    sigterm_raises_interrupt()

    def log(message: str) -> None:
        STDERR.print(f"[dim]{message}[/dim]")

    with contextlib.ExitStack() as cleanup:
        root = cleanup.enter_context(scratch_dir("mh-bench-obs-", keep=args.keep, log=log))
        stack = cleanup.enter_context(BenchStack(root))
        stack.start(log)
        db = stack.database("modelhub_registry")
        secret = secrets.token_urlsafe(48)
        sink = cleanup.enter_context(otlp_sink())
        base: dict[str, object] = {
            **stack.service_values(db, secret),
            "connection_sync_seconds": 0,
            # One process each: the figures compare tracing on and off, not worker counts.
            "workers": 1,
        }
        settings = RegistrySettings(**{**base, "port": pick_free_port()})  # type: ignore[arg-type]
        asyncio.run(bootstrap.run_migrations(settings))
        urls = {}
        for name in ("off", "on", "sampled"):
            port = pick_free_port()
            env = service_env(ENV_PREFIX, {**base, "port": port})
            if name != "off":
                env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{sink.server_address[1]}"
                env["OTEL_SERVICE_NAME"] = "modelhub-registry-bench"
            if name == "sampled":
                env["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
                env["OTEL_TRACES_SAMPLER_ARG"] = str(SAMPLE_RATIO)
            process = ServiceProcess(
                root / f"registry-{name}", module="modelhub_registry", env=env, port=port, name=name
            )
            cleanup.callback(process.stop)
            process.start()
            urls[name] = process.base_url
            log(f"registry ({name}) ready at {process.base_url}")
        token = issue_token(secret, subject="bench-admin", role="admin", ttl_seconds=3600)
        samples = asyncio.run(run_http(urls, token, args.models, args.rounds, args.requests))
        plain_us, metered_us = asyncio.run(middleware_cost(20_000))
        exports = sink.exports

    p50 = {name: percentile(values, 50) * 1000 for name, values in samples.items()}
    p99 = {name: percentile(values, 99) * 1000 for name, values in samples.items()}
    print(f"\n{machine_summary()}\n")
    print(
        markdown_table(
            ["registry GET /api/v1/models/{id}", "requests", "p50 ms", "p99 ms"],
            [
                ["tracing off (metrics on)", f"{len(samples['off']):,}", f"{p50['off']:.2f}", f"{p99['off']:.2f}"],
                [
                    "tracing on (OTLP to a local sink)",
                    f"{len(samples['on']):,}",
                    f"{p50['on']:.2f}",
                    f"{p99['on']:.2f}",
                ],
                ["ratio on/off", "", f"{p50['on'] / p50['off']:.2f}x", f"{p99['on'] / p99['off']:.2f}x"],
                [
                    f"tracing on, {SAMPLE_RATIO:.0%} of traces sampled",
                    f"{len(samples['sampled']):,}",
                    f"{p50['sampled']:.2f}",
                    f"{p99['sampled']:.2f}",
                ],
                [
                    "ratio sampled/off",
                    "",
                    f"{p50['sampled'] / p50['off']:.2f}x",
                    f"{p99['sampled'] / p99['off']:.2f}x",
                ],
            ],
        )
    )
    print(f"\nOTLP exports received by the sink: {exports:,} (batches)\n")
    print(
        markdown_table(
            ["ASGI call of a trivial route (in-process)", "µs per request"],
            [
                ["without the metrics middleware", f"{plain_us:.1f}"],
                ["with the metrics middleware", f"{metered_us:.1f}"],
                ["the middleware's cost", f"{metered_us - plain_us:.1f}"],
            ],
        )
    )


if __name__ == "__main__":
    main()
