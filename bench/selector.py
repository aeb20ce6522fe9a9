"""The model selector at catalog scale: `ListModels` (gRPC) and `GET /v1/models` from the gateway's
in-memory catalog, next to the registry list they replace, at 2,000 and 10,000 model files.

    .venv/bin/python bench/selector.py [--sizes N ...] [--samples S] [--keep]

One run starts real NATS (JetStream), PostgreSQL+pgvector and SeaweedFS S3 on free loopback ports, the
registry and the gateway each as its own process (`python -m modelhub_<name> serve`), registers three base
models and creates model files through the registry's API (four owners, grants to a user and a group, public,
hidden and disabled files, one in ten built on an earlier file, as `bench/registry.py` seeds them). The
gateway learns each of them from the registry's events only. At each size, once the gateway's selector for
the admin equals the registry's, it measures one request at a time:

* **registry list (baseline)**: what the gateway did for every selector call before it held a catalog: every
  page of `GET /api/v1/models` (200 a page, the gateway's page size) and `GET /api/v1/base-models` for the
  caller's token, at the same time, merged;
* **ListModels**: `ChatService.ListModels` over gRPC on the same token, decoded into messages and the ids read
  out, as a client would; and the same call with its answer left as bytes (the gateway's and the transport's
  part of it: the difference is the client's own protobuf decoding);
* **GET /v1/models**: the gateway's OpenAI-compatible model list on the same token.

Callers: "viewer" owns nothing and reads what grants, its group and public files give it (the access filter's
expensive branches); "admin" reads everything. Before timing, the bench checks that the gateway's answer
names exactly the models the registry's merged list names, for both callers. The client is one process
calling one request at a time, so the figures include its own HTTP/gRPC parsing (the same on both sides).
Progress goes to stderr, markdown to stdout. Every process started is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import random
import secrets
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import grpc
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
from registry import ADMIN, BASE_MODELS, OWNER_GROUPS, OWNERS, VIEWER, VIEWER_GROUPS, model_spec, with_chains
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from modelhub.chat.v1 import chat_pb2, chat_pb2_grpc
from modelhub_chat_gateway import bootstrap as gateway_bootstrap
from modelhub_chat_gateway.settings import ENV_PREFIX as GATEWAY_PREFIX
from modelhub_chat_gateway.settings import ChatGatewaySettings
from modelhub_common.auth import issue_token
from modelhub_devstack import pick_free_port
from modelhub_registry import bootstrap as registry_bootstrap
from modelhub_registry.settings import ENV_PREFIX as REGISTRY_PREFIX
from modelhub_registry.settings import RegistrySettings

STDERR = Console(stderr=True)
PAGE = 200  # the gateway's page size when it listed through the registry
WARMUP = 5
CONVERGE_SECONDS = 300.0


def log(message: str) -> None:
    STDERR.print(f"[dim]{message}[/dim]")


# ---- seeding


async def seed(client: httpx.AsyncClient, tokens: dict[str, str], specs: list[dict[str, Any]], start: int) -> None:
    """Creates ``specs[start:]`` through the registry's API, 16 at a time (a chained file after its base)."""
    created = {spec["id"]: asyncio.Event() for spec in specs[start:]}
    pending = iter(range(start, len(specs)))
    progress = Progress(
        TextColumn("creating model files"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=STDERR,
    )

    async def worker() -> None:
        for index in pending:
            spec = specs[index]
            owner = OWNERS[index % len(OWNERS)]
            base = created.get(spec["base_model_id"])
            if base is not None:
                await base.wait()
            response = await client.post(
                "/api/v1/models", json=spec, headers={"Authorization": f"Bearer {tokens[owner]}"}
            )
            if response.status_code != 201:
                raise SystemExit(f"create {spec['id']} answered {response.status_code}: {response.text[:300]}")
            created[spec["id"]].set()
            progress.update(task, advance=1)

    with progress:
        task = progress.add_task("seed", total=len(specs) - start)
        await asyncio.gather(*(worker() for _ in range(16)))


# ---- the three ways to list


def registry_list(client: httpx.Client, token: str) -> list[str]:
    """The ids the selector showed when it was built from the registry on every call (the old gateway path)."""
    headers = {"Authorization": f"Bearer {token}"}
    # The gateway fetched the base models alongside the first page; one client does the same here.
    bases = client.get("/api/v1/base-models", headers=headers)
    bases.raise_for_status()
    files: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"include_hidden": "false", "include_disabled": "false", "limit": PAGE}
        if cursor:
            params["cursor"] = cursor
        response = client.get("/api/v1/models", params=params, headers=headers)
        response.raise_for_status()
        body = response.json()
        files.extend(str(item["id"]) for item in body["items"])
        cursor = body.get("next_cursor")
        if not cursor:
            break
    shown = set(files)
    return files + [
        str(b["id"]) for b in bases.json()["items"] if b["id"] not in shown and b.get("available", True) is not False
    ]


def list_models(stub: chat_pb2_grpc.ChatServiceStub, token: str) -> list[str]:
    response = stub.ListModels(chat_pb2.ListModelsRequest(), metadata=(("authorization", f"Bearer {token}"),))
    return [m.id for m in response.models]


def raw_list_models(call: Callable[..., bytes], token: str) -> list[str]:
    """``ListModels`` as bytes off the wire, left undecoded: the gateway's and the transport's part of a call."""
    call(chat_pb2.ListModelsRequest(), metadata=(("authorization", f"Bearer {token}"),))
    return []


def openai_models(client: httpx.Client, token: str) -> list[str]:
    response = client.get("/v1/models", headers={"Authorization": f"Bearer {token}"})
    response.raise_for_status()
    return [str(m["id"]) for m in json.loads(response.content)["data"]]


def decode_cost(stub: chat_pb2_grpc.ChatServiceStub, gateway: httpx.Client, token: str) -> dict[str, tuple[int, float]]:
    """Response size and the client's own decoding time (median of 20) for each gateway call: part of what
    the client measures, but not the gateway's work."""
    metadata = (("authorization", f"Bearer {token}"),)
    raw_grpc = stub.ListModels(chat_pb2.ListModelsRequest(), metadata=metadata).SerializeToString()
    raw_http = gateway.get("/v1/models", headers={"Authorization": f"Bearer {token}"}).content
    out: dict[str, tuple[int, float]] = {}
    for name, raw, decode in (
        ("ListModels (gRPC)", raw_grpc, chat_pb2.ListModelsResponse.FromString),
        ("GET /v1/models", raw_http, json.loads),
    ):
        seconds = []
        for _ in range(20):
            started = time.perf_counter()
            decode(raw)
            seconds.append(time.perf_counter() - started)
        out[name] = (len(raw), percentile(seconds, 50))
    return out


def timed(call: Callable[[], list[str]], samples: int) -> tuple[list[float], int]:
    """Seconds per call, one call at a time, after a few warm-up calls; and the number of models listed."""
    listed = 0
    for _ in range(WARMUP):
        listed = len(call())
    seconds: list[float] = []
    for _ in range(samples):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return seconds, listed


def converge(call: Callable[[], list[str]], expected: set[str], what: str) -> None:
    """Waits until the gateway's selector names exactly ``expected`` (it learns new files from events)."""
    deadline = time.monotonic() + CONVERGE_SECONDS
    while True:
        got = set(call())
        if got == expected:
            return
        if time.monotonic() > deadline:
            missing, extra = sorted(expected - got)[:5], sorted(got - expected)[:5]
            raise SystemExit(
                f"{what}: the gateway's selector differs from the registry's: missing {missing}, extra {extra}"
            )
        time.sleep(0.5)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def measure(
    size: int,
    registry: httpx.Client,
    gateway: httpx.Client,
    stub: chat_pb2_grpc.ChatServiceStub,
    raw: Callable[..., bytes],
    tokens: dict[str, str],
    samples: int,
) -> list[list[str]]:
    rows: list[list[str]] = []
    for who in ("viewer", "admin"):
        token = tokens[ADMIN if who == "admin" else VIEWER]
        expected = set(registry_list(registry, token))
        by_grpc = functools.partial(list_models, stub, token)
        by_http = functools.partial(openai_models, gateway, token)
        converge(by_grpc, expected, f"ListModels as {who}")
        converge(by_http, expected, f"GET /v1/models as {who}")
        log(f"{size:,} files, {who}: the gateway's selector equals the registry's ({len(expected):,} models)")
        # The baseline takes ~0.1 s per 1,000 files: fewer samples keep the run short at 10,000.
        base_samples = max(10, min(samples, 40_000 // size))
        base, listed = timed(functools.partial(registry_list, registry, token), base_samples)
        grpc_s, _ = timed(by_grpc, samples)
        wire_s, _ = timed(functools.partial(raw_list_models, raw, token), samples)
        http_s, _ = timed(by_http, samples)
        decoding = decode_cost(stub, gateway, token)
        for name, figures, n in (
            ("registry list (baseline)", base, base_samples),
            ("ListModels (gRPC)", grpc_s, samples),
            ("ListModels, bytes only (not decoded)", wire_s, samples),
            ("GET /v1/models", http_s, samples),
        ):
            p50, p99 = percentile(figures, 50), percentile(figures, 99)
            ratio = percentile(base, 50) / p50
            rows.append(
                [
                    f"{size:,}",
                    who,
                    f"{listed:,}",
                    name,
                    str(n),
                    f"**{ms(p50)}**" if name != "registry list (baseline)" else ms(p50),
                    f"**{ms(p99)}**" if name != "registry list (baseline)" else ms(p99),
                    f"{ratio:.0f}×" if name != "registry list (baseline)" else "1×",
                    f"{decoding[name][0] / 1024:,.0f} KiB / {ms(decoding[name][1])}" if name in decoding else "",
                ]
            )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2_000, 10_000], help="catalog sizes, ascending")
    parser.add_argument("--samples", type=int, default=200, help="timed calls per figure (default 200)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (logs, databases)")
    args = parser.parse_args()
    if args.sizes != sorted(args.sizes) or args.sizes[0] < 1 or args.samples < 10:
        parser.error("--sizes must be ascending and positive; --samples at least 10")
    sigterm_raises_interrupt()
    secret = secrets.token_urlsafe(48)
    tokens = {
        who: issue_token(secret, subject=who, role="user", groups=OWNER_GROUPS[who], ttl_seconds=24 * 3600)
        for who in OWNERS
    }
    tokens[VIEWER] = issue_token(secret, subject=VIEWER, role="user", groups=VIEWER_GROUPS, ttl_seconds=24 * 3600)
    tokens[ADMIN] = issue_token(secret, subject=ADMIN, role="admin", ttl_seconds=24 * 3600)
    rng = random.Random(7)
    specs = with_chains([model_spec(i, rng) for i in range(args.sizes[-1])])
    with ExitStack() as cleanup:
        root = cleanup.enter_context(scratch_dir("mh-sel-", keep=args.keep, log=log))
        stack = cleanup.enter_context(BenchStack(root, durable_postgres=False))
        stack.start(log)
        s3 = stack.s3_endpoint
        common: dict[str, object] = {
            "host": "127.0.0.1",
            "log_level": "WARNING",
            "nats_url": stack.nats.url,
            "jwt_secret": secret,
            "s3_endpoint": s3.endpoint,
            "s3_access_key": s3.access_key,
            "s3_secret_key": s3.secret_key,
        }
        registry_values = {**common, "port": pick_free_port(), "database_url": stack.database("modelhub_registry")}
        asyncio.run(registry_bootstrap.run_migrations(RegistrySettings(**registry_values)))  # type: ignore[arg-type]
        registry = ServiceProcess(
            root / "registry",
            module="modelhub_registry",
            env=service_env(REGISTRY_PREFIX, registry_values),
            port=int(str(registry_values["port"])),
            name="registry",
        )
        registry.start()
        cleanup.callback(registry.stop)
        grpc_port = pick_free_port()
        gateway_values = {
            **common,
            "port": pick_free_port(),
            "grpc_port": grpc_port,
            "database_url": stack.database("modelhub_gateway"),
            "registry_url": registry.base_url,
            "rag_url": "http://127.0.0.1:9",
        }
        asyncio.run(gateway_bootstrap.run_migrations(ChatGatewaySettings(**gateway_values)))  # type: ignore[arg-type]
        gateway = ServiceProcess(
            root / "gateway",
            module="modelhub_chat_gateway",
            env=service_env(GATEWAY_PREFIX, gateway_values),
            port=int(str(gateway_values["port"])),
            name="gateway",
        )
        gateway.start()
        cleanup.callback(gateway.stop)
        log("stack, registry and gateway are up")
        with httpx.Client(base_url=registry.base_url, timeout=60) as api:
            for base in BASE_MODELS:
                api.post(
                    "/api/v1/base-models", json={"id": base}, headers={"Authorization": f"Bearer {tokens[ADMIN]}"}
                ).raise_for_status()
        rows: list[list[str]] = []
        channel = grpc.insecure_channel(
            f"127.0.0.1:{grpc_port}", options=[("grpc.max_receive_message_length", 64 * 2**20)]
        )
        cleanup.callback(channel.close)
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        # The same call with no response deserializer: grpc hands over the bytes as they arrived.
        raw = channel.unary_unary(
            "/modelhub.chat.v1.ChatService/ListModels",
            request_serializer=chat_pb2.ListModelsRequest.SerializeToString,
            response_deserializer=None,
        )
        with (
            httpx.Client(base_url=registry.base_url, timeout=120) as reg,
            httpx.Client(base_url=gateway.base_url, timeout=120) as gw,
        ):
            done = 0
            for size in args.sizes:

                async def create(start: int, end: int) -> None:
                    async with httpx.AsyncClient(base_url=registry.base_url, timeout=60) as client:
                        await seed(client, tokens, specs[:end], start)

                asyncio.run(create(done, size))
                done = size
                rows.extend(measure(size, reg, gw, stub, raw, tokens, args.samples))
    print(f"Run: {machine_summary()}; one request at a time from one client process.\n")
    print(
        markdown_table(
            [
                "model files",
                "caller",
                "models listed",
                "call",
                "samples",
                "p50 (ms)",
                "p99 (ms)",
                "faster (p50)",
                "response / client decode p50 (ms)",
            ],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
