"""Does a refusal's timing tell a stranger that a private model file or collection exists? Side by side, one run.

    .venv/bin/python bench/oracle.py [--requests 2000] [--rounds 5] [--keep]

One run starts real NATS (JetStream), PostgreSQL+pgvector and SeaweedFS S3 on free loopback ports, and the
registry and the rag service as their own processes (`python -m modelhub_<name> serve`, one worker each). An
owner creates a private model file (on a base model) and a private knowledge collection; a stranger, who may
read neither, then asks for each of them and for an id that does not exist, the two requests alternating one
after the other (so drift on a shared machine hits both alike), in ``--rounds`` rounds of ``--requests`` each:

* registry `GET /api/v1/models/{id}`: the private model file vs a missing id;
* registry `POST /api/v1/models` built on the private model file vs on a missing base (each a 422);
* rag `GET /api/v1/knowledge/{id}`: the private collection vs a missing id.

Both sides of a pair must get the same status and the same message (the id replaced): the bench stops if not.
It prints p50 and p99 of each side and their ratio (private ÷ missing) with the difference of the medians in
microseconds. A difference within the run-to-run spread of the same request tells nothing; the spread is
printed too (the range of the per-round p50s of the missing side).

Progress goes to stderr, the markdown table to stdout. Every process started is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import statistics
import time
import uuid
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
from rich.console import Console

from modelhub_common.auth import issue_token
from modelhub_devstack import pick_free_port
from modelhub_rag import bootstrap as rag_bootstrap
from modelhub_rag.settings import ENV_PREFIX as RAG_PREFIX
from modelhub_rag.settings import RagSettings
from modelhub_registry import bootstrap as registry_bootstrap
from modelhub_registry.settings import ENV_PREFIX as REGISTRY_PREFIX
from modelhub_registry.settings import RegistrySettings

STDERR = Console(stderr=True)
BASE = "llama3.1:8b"


def log(message: str) -> None:
    STDERR.print(f"[dim]{message}[/dim]")


def start(root: Any, module: str, prefix: str, values: dict[str, object], name: str) -> ServiceProcess:
    process = ServiceProcess(
        root / name, module=module, env=service_env(prefix, values), port=int(str(values["port"])), name=name
    )
    process.start()
    return process


async def pair(
    client: httpx.AsyncClient, private: dict[str, Any], missing: dict[str, Any], rounds: int, requests: int
) -> tuple[list[list[float]], list[list[float]]]:
    """Seconds per request of each side, by round, the two alternating; checks first that both answer alike
    (``id``: what each side's message names, replaced before comparing; it is not sent)."""

    async def once(side: dict[str, Any]) -> tuple[float, httpx.Response]:
        request = {k: v for k, v in side.items() if k != "id"}
        started = time.perf_counter()
        response = await client.request(**request)
        return time.perf_counter() - started, response

    _, a = await once(private)
    _, b = await once(missing)
    shown = [r.json()["error"]["message"].replace(side["id"], "ID") for r, side in ((a, private), (b, missing))]
    if a.status_code != b.status_code or shown[0] != shown[1]:
        raise SystemExit(f"the answers differ: {a.status_code} {shown[0]!r} vs {b.status_code} {shown[1]!r}")
    log(f"  both answer {a.status_code} {shown[0]!r}")
    for _ in range(50):  # warm-up: prepared statements, pools
        await once(private)
        await once(missing)
    by_round: tuple[list[list[float]], list[list[float]]] = ([], [])
    for _ in range(rounds):
        sides: tuple[list[float], list[float]] = ([], [])
        for _ in range(requests):
            for seconds_of, side in zip(sides, (private, missing), strict=True):
                seconds, response = await once(side)
                if response.status_code != a.status_code:
                    raise SystemExit(f"{side['url']}: {response.status_code} mid-run")
                seconds_of.append(seconds)
        by_round[0].append(sides[0])
        by_round[1].append(sides[1])
    return by_round


def row(label: str, by_round: tuple[list[list[float]], list[list[float]]]) -> list[str]:
    private = [x for r in by_round[0] for x in r]
    missing = [x for r in by_round[1] for x in r]
    p50p, p50m = percentile(private, 50), percentile(missing, 50)
    spread = [percentile(r, 50) for r in by_round[1]]
    return [
        label,
        f"{p50p * 1e3:.3f} / {percentile(private, 99) * 1e3:.3f}",
        f"{p50m * 1e3:.3f} / {percentile(missing, 99) * 1e3:.3f}",
        f"{p50p / p50m:.3f}×",
        f"{(p50p - p50m) * 1e6:+.0f} µs",
        f"{(max(spread) - min(spread)) * 1e6:.0f} µs",
    ]


async def measure(registry: str, rag: str, owner: str, stranger: str, rounds: int, requests: int) -> list[list[str]]:
    owner_h = {"Authorization": f"Bearer {owner}"}
    stranger_h = {"Authorization": f"Bearer {stranger}"}
    suffix = uuid.uuid4().hex[:8]
    async with httpx.AsyncClient(timeout=30) as client:
        made = await client.post(
            f"{registry}/api/v1/models",
            json={"id": f"private-{suffix}", "name": "p", "base_model_id": BASE},
            headers=owner_h,
        )
        made.raise_for_status()
        collection = await client.post(f"{rag}/api/v1/knowledge", json={"name": "private"}, headers=owner_h)
        collection.raise_for_status()
        kid = collection.json()["id"]
        model_id, ghost, missing_kid = made.json()["id"], f"ghost-{suffix}", str(uuid.uuid4())
        body = {"id": f"mine-{suffix}", "name": "m", "base_model_id": model_id}
        cases: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
            "registry GET /api/v1/models/{id}": (
                {"method": "GET", "url": f"{registry}/api/v1/models/{model_id}", "id": model_id},
                {"method": "GET", "url": f"{registry}/api/v1/models/{ghost}", "id": ghost},
            ),
            # The same new id on both sides: each is refused (422), so nothing is created.
            "registry POST /api/v1/models on that base": (
                {"method": "POST", "url": f"{registry}/api/v1/models", "json": body, "id": model_id},
                {
                    "method": "POST",
                    "url": f"{registry}/api/v1/models",
                    "json": {**body, "base_model_id": ghost},
                    "id": ghost,
                },
            ),
            "rag GET /api/v1/knowledge/{id}": (
                {"method": "GET", "url": f"{rag}/api/v1/knowledge/{kid}", "id": kid},
                {"method": "GET", "url": f"{rag}/api/v1/knowledge/{missing_kid}", "id": missing_kid},
            ),
        }
        rows = []
        for label, (private, missing) in cases.items():
            log(f"{label}:")
            for side in (private, missing):
                side["headers"] = stranger_h
            rows.append(row(label, await pair(client, private, missing, rounds, requests)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="requests per side and round (default 2000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per pair (default 5)")
    parser.add_argument("--keep", action="store_true", help="leave the temporary directory (logs, data) behind")
    args = parser.parse_args()
    sigterm_raises_interrupt()
    with contextlib.ExitStack() as cleanup:
        root = cleanup.enter_context(scratch_dir("mh-bench-oracle-", keep=args.keep, log=log))
        stack = cleanup.enter_context(BenchStack(root))
        stack.start(log)
        secret = secrets.token_urlsafe(48)
        registry_values: dict[str, object] = {
            **stack.service_values(stack.database("modelhub_registry"), secret),
            "port": pick_free_port(),
            "connection_sync_seconds": 0,
            "workers": 1,
        }
        asyncio.run(registry_bootstrap.run_migrations(RegistrySettings(**registry_values)))  # type: ignore[arg-type]
        rag_values: dict[str, object] = {
            **stack.service_values(stack.database("modelhub_rag"), secret),
            "port": pick_free_port(),
            "consume_model_events": False,
            "workers": 1,
        }
        asyncio.run(rag_bootstrap.run_migrations(RagSettings(**rag_values)))  # type: ignore[arg-type]
        registry = start(root, "modelhub_registry", REGISTRY_PREFIX, registry_values, "registry")
        cleanup.callback(registry.stop)
        rag = start(root, "modelhub_rag", RAG_PREFIX, rag_values, "rag")
        cleanup.callback(rag.stop)
        log("registry and rag are up")
        admin = issue_token(secret, subject="bench-admin", role="admin", ttl_seconds=3600)
        httpx.post(
            f"{registry.base_url}/api/v1/base-models", json={"id": BASE}, headers={"Authorization": f"Bearer {admin}"}
        ).raise_for_status()
        owner = issue_token(secret, subject="bench-owner", role="user", ttl_seconds=3600)
        stranger = issue_token(secret, subject="bench-stranger", role="user", ttl_seconds=3600)
        rows = asyncio.run(measure(registry.base_url, rag.base_url, owner, stranger, args.rounds, args.requests))
    print(f"### refusals: private vs missing, {args.rounds} rounds × {args.requests} requests a side\n")
    print(f"`python bench/oracle.py` — {machine_summary()}.\n")
    headers = [
        "request (as a stranger)",
        "private p50 / p99 (ms)",
        "missing p50 / p99 (ms)",
        "private ÷ missing (p50)",
        "difference (p50)",
        "spread of missing's round p50s",
    ]
    print(markdown_table(headers, rows))
    print(f"\nmean of the rows' p50 ratios: {statistics.mean(float(r[3].rstrip('×')) for r in rows):.3f}")


if __name__ == "__main__":
    main()
