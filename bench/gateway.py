"""The chat gateway's overhead: time to first token and per-token latency through the gateway vs straight from
the backend, at 1, 64 and 512 concurrent streams, a two-model turn's wall time vs the slower model alone, and
the time a server-side tool step adds vs calling the same MCP tool server directly, at 64 concurrent chats.

    .venv/bin/python bench/gateway.py [--tokens N] [--interval-ms MS] [--quick] [--keep]

One run starts real NATS, PostgreSQL and SeaweedFS S3 on free loopback ports, the registry and the gateway
each as its own process (`python -m modelhub_<name> serve`), and a fast streaming backend written for this
bench (an Ollama-compatible `/api/chat` NDJSON server on raw asyncio streams, also its own process). It
streams N tokens `interval` ms apart, the first one at once, so what is measured is the gateway, not a model.

* **direct**: this process streams `POST /api/chat` from the backend with aiohttp (the client the gateway
  itself streams backends with, so the extra hop is not flattered by a slower direct client);
* **gateway**: this process calls `ChatService.Chat` over gRPC; the gateway resolves the model (cached after
  the first call), stores the conversation in PostgreSQL and streams from the same backend.

Both are measured the same way in the same run, one after the other at each level, from one client process
on uvloop (as the gateway is), so that the client's own per-message cost stays small next to what it measures.

"added" is the gateway's percentile minus the direct one at the same concurrency. Per-token latency is the
gap between consecutive tokens as the client sees them. The client, the gateway and the backend share the
machine's cores, so the figures at high concurrency include CPU contention with the client itself.
Progress goes to stderr, markdown to stdout. Every process started is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import httpx
import uvloop
from _support import (
    BenchStack,
    CpuMeter,
    ServiceProcess,
    machine_summary,
    markdown_table,
    percentile,
    rss_bytes,
    scratch_dir,
    service_env,
    sigterm_raises_interrupt,
)
from rich.console import Console

from modelhub.chat.v1 import chat_pb2, chat_pb2_grpc
from modelhub_chat_gateway import bootstrap as gateway_bootstrap
from modelhub_chat_gateway.settings import ENV_PREFIX as GATEWAY_PREFIX
from modelhub_chat_gateway.settings import ChatGatewaySettings
from modelhub_common.auth import issue_token
from modelhub_common.tools import McpSessionCache, ToolServerConfig, ToolSpec, call_tool, discover
from modelhub_devstack import ManagedServer, pick_free_port
from modelhub_devstack.server import http_ok
from modelhub_devstack.tool_servers import ToolServer
from modelhub_registry import bootstrap as registry_bootstrap
from modelhub_registry.settings import ENV_PREFIX as REGISTRY_PREFIX
from modelhub_registry.settings import RegistrySettings

STDERR = Console(stderr=True)
FAST, SLOW, TOOLY = "fast:latest", "slow:latest", "tooly:latest"
#: The model file on TOOLY whose toolIds name the bench's MCP tool server.
TOOL_MODEL = "bench-tools"
TOOL_CALL = b'{"message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"add","arguments":{"a":1,"b":2}}}]},"done":false}\n'  # noqa: E501

# ---------------------------------------------------------------------------------------------------------
# The fast streaming backend (run in its own process with --serve-backend PORT)


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tokens: int, interval: float) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            body = await reader.readexactly(length) if length else b""
            if method == "GET" and path == "/api/tags":
                payload = json.dumps(
                    {
                        "models": [
                            {"name": m, "model": m, "size": 1, "digest": m, "details": {}} for m in (FAST, SLOW, TOOLY)
                        ]
                    }
                ).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(payload)).encode()
                    + b"\r\n\r\n"
                    + payload
                )
                await writer.drain()
                continue
            request = json.loads(body)
            model = request.get("model", FAST)
            gap = interval * (2 if model == SLOW else 1)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n")
            messages = request.get("messages") or [{}]
            if model == TOOLY and request.get("tools") and messages[-1].get("role") != "tool":
                # The tool model first asks for add(1, 2), at once; with the result it answers as the fast one.
                writer.write(b"%x\r\n%s\r\n" % (len(TOOL_CALL), TOOL_CALL))
                await writer.drain()
                tokens_now = 0
            else:
                tokens_now = tokens
            for n in range(tokens_now):
                if n:
                    await asyncio.sleep(gap)
                line = b'{"message":{"role":"assistant","content":"tok "},"done":false}\n'
                writer.write(b"%x\r\n%s\r\n" % (len(line), line))
                await writer.drain()
            last = (
                json.dumps(
                    {
                        "message": {"role": "assistant", "content": ""},
                        "done": True,
                        "done_reason": "stop",
                        "eval_count": tokens_now,
                    }
                ).encode()
                + b"\n"
            )
            writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(last), last))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


def serve_backend(port: int, tokens: int, interval: float) -> None:
    async def main() -> None:
        server = await asyncio.start_server(
            lambda r, w: _handle(r, w, tokens, interval), "127.0.0.1", port, backlog=4096
        )
        async with server:
            await server.serve_forever()

    asyncio.run(main())


class BackendProcess(ManagedServer):
    start_timeout = 20.0

    def __init__(self, workdir: Path, port: int, tokens: int, interval: float) -> None:
        super().__init__("bench-backend", workdir)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._args = [str(port), str(tokens), str(interval)]

    def command(self) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), "--serve-backend", *self._args]

    def ports(self) -> Sequence[int]:
        return (self.port,)

    def is_healthy(self) -> bool:
        return http_ok(f"{self.url}/api/tags")


class ProfiledService(ServiceProcess):
    """The gateway under cProfile (written when it stops), to see where its time goes."""

    profile_path: Path | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "cProfile", "-o", str(self.profile_path), "-m", self.module, "serve"]


# ---------------------------------------------------------------------------------------------------------
# Clients


@dataclass
class Stream:
    ttft: float = 0.0
    gaps: list[float] = field(default_factory=list)
    total: float = 0.0
    error: str = ""
    #: The gateway's own figure (from its AnswerDone): from starting the answer to the backend's first token.
    server_ttft: float = 0.0


async def direct_stream(http: aiohttp.ClientSession, url: str, model: str) -> Stream:
    result = Stream()
    began = last = time.perf_counter()
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "stream": True}
    try:
        async with http.post(f"{url}/api/chat", json=body) as response:
            async for line in response.content:
                if not line.strip():
                    continue
                now = time.perf_counter()
                if json.loads(line).get("done"):
                    break
                if result.ttft == 0.0:
                    result.ttft = now - began
                else:
                    result.gaps.append(now - last)
                last = now
    except aiohttp.ClientError as exc:
        result.error = type(exc).__name__
    result.total = time.perf_counter() - began
    return result


async def gateway_stream(
    stub: chat_pb2_grpc.ChatServiceStub, metadata: list[tuple[str, str]], models: list[str]
) -> Stream:
    result = Stream()
    began = last = time.perf_counter()
    request = chat_pb2.ChatRequest(models=models, message=chat_pb2.UserMessage(text="hello"))
    try:
        async for event in stub.Chat(request, metadata=metadata, timeout=300):
            kind = event.WhichOneof("event")
            if kind == "delta":
                now = time.perf_counter()
                if result.ttft == 0.0:
                    result.ttft = now - began
                else:
                    result.gaps.append(now - last)
                last = now
            elif kind == "answer_error":
                result.error = event.answer_error.code
            elif kind == "answer_done":
                result.server_ttft = event.answer_done.time_to_first_token_seconds
    except grpc.aio.AioRpcError as exc:
        result.error = exc.code().name
    result.total = time.perf_counter() - began
    return result


@dataclass
class ToolTurn:
    #: From the ToolCall event to its ToolResult, as this client sees them.
    step: float = 0.0
    #: From the ToolResult to the first token of the answer that uses it (the backend asked again).
    resume: float = 0.0
    total: float = 0.0
    error: str = ""


async def gateway_tool_turn(stub: chat_pb2_grpc.ChatServiceStub, metadata: list[tuple[str, str]]) -> ToolTurn:
    result = ToolTurn()
    began = time.perf_counter()
    called = answered = 0.0
    request = chat_pb2.ChatRequest(models=[TOOL_MODEL], message=chat_pb2.UserMessage(text="add 1 and 2"))
    try:
        async for event in stub.Chat(request, metadata=metadata, timeout=300):
            kind = event.WhichOneof("event")
            now = time.perf_counter()
            if kind == "tool_call":
                called = now
            elif kind == "tool_result":
                answered = now
                result.step = now - called
                if not event.tool_result.ok:
                    result.error = event.tool_result.error_code
            elif kind == "delta" and answered and not result.resume:
                result.resume = now - answered
            elif kind == "answer_error":
                result.error = event.answer_error.code
    except grpc.aio.AioRpcError as exc:
        result.error = exc.code().name
    result.total = time.perf_counter() - began
    if not called or not answered:
        result.error = result.error or "no tool step"
    return result


async def _ndjson(http: aiohttp.ClientSession, url: str, body: dict[str, object]) -> list[dict[str, object]]:
    lines: list[dict[str, object]] = []
    async with http.post(f"{url}/api/chat", json=body) as response:
        async for line in response.content:
            if line.strip():
                lines.append(json.loads(line))
    return lines


async def direct_tool_turn(
    http: aiohttp.ClientSession, backend_url: str, config: ToolServerConfig, spec: ToolSpec, sessions: McpSessionCache
) -> ToolTurn:
    """The same turn with the loop in this client: ask the backend (it asks for the tool), call the tool server,
    ask again with the result and read the answer. ``step`` is the tool call alone."""
    result = ToolTurn()
    began = time.perf_counter()
    tool = {"type": "function", "function": {"name": spec.name, "parameters": spec.parameters}}
    messages: list[dict[str, object]] = [{"role": "user", "content": "add 1 and 2"}]
    first = await _ndjson(http, backend_url, {"model": TOOLY, "messages": messages, "tools": [tool], "stream": True})
    calls: list[dict[str, Any]] = []
    for line in first:
        message = line.get("message")
        if isinstance(message, dict):
            calls += message.get("tool_calls") or []
    if not calls:
        result.error = "no tool call"
        return result
    called = time.perf_counter()
    outcome = await call_tool(config, spec, calls[0]["function"]["arguments"], sessions=sessions)
    answered = time.perf_counter()
    result.step = answered - called
    if not outcome.ok:
        result.error = outcome.error_code or "tool failed"
    messages += [
        {"role": "assistant", "content": "", "tool_calls": calls},
        {"role": "tool", "content": outcome.content, "tool_name": spec.name},
    ]
    body = {"model": TOOLY, "messages": messages, "tools": [tool], "stream": True}
    async with http.post(f"{backend_url}/api/chat", json=body) as response:
        async for line in response.content:
            if line.strip() and not result.resume:
                result.resume = time.perf_counter() - answered
    result.total = time.perf_counter() - began
    return result


async def tool_steps(
    args: argparse.Namespace,
    stubs: list[chat_pb2_grpc.ChatServiceStub],
    metadata: list[tuple[str, str]],
    http: aiohttp.ClientSession,
    backend_url: str,
    mcp_url: str,
) -> str:
    """Turns with one tool step at ``--tool-concurrency`` concurrent chats, the loop run by the gateway vs the
    same loop run by this client straight against the backend and the MCP server (same client library, MCP
    sessions kept open as the gateway keeps them), each in a closed loop with the same arrival pattern."""
    level = args.tool_concurrency
    per_worker = 2 if args.quick else 6
    answer_seconds = args.tokens * args.interval_ms / 1000
    config = ToolServerConfig(kind="mcp", url=mcp_url, timeout_seconds=30, allow_private_urls=True)
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=level * 4)) as tool_http:
        sessions = McpSessionCache(tool_http)
        try:
            spec = next(t for t in await discover(config, http=tool_http) if t.name == "add")

            async def direct(_: int) -> ToolTurn:
                return await direct_tool_turn(http, backend_url, config, spec, sessions)

            async def through(i: int) -> ToolTurn:
                return await gateway_tool_turn(stubs[i % 8], metadata)

            await asyncio.gather(*(direct(i) for i in range(level)), *(through(i) for i in range(level)))  # warm up
            STDERR.print(f"[dim]tool steps, {level} concurrent chats, the loop in the client …[/dim]")
            direct_turns = await closed_loop(level, per_worker, answer_seconds, direct)
            STDERR.print(f"[dim]tool steps, {level} concurrent chats, the loop in the gateway …[/dim]")
            gateway_turns = await closed_loop(level, per_worker, answer_seconds, through)
        finally:
            await sessions.aclose()

    def figures(turns: list[ToolTurn], pick: Callable[[ToolTurn], float]) -> list[float]:
        return [pick(t) for t in turns if not t.error] or [0.0]

    rows = []
    for label, pick in (
        ("tool step (call → result)", lambda t: t.step),
        ("result → first token of the answer", lambda t: t.resume),
        ("whole turn", lambda t: t.total),
    ):
        d, g = figures(direct_turns, pick), figures(gateway_turns, pick)
        rows.append(
            [
                label,
                f"{ms(percentile(d, 50))} / {ms(percentile(d, 99))}",
                f"{ms(percentile(g, 50))} / {ms(percentile(g, 99))}",
                f"**{ms(percentile(g, 50) - percentile(d, 50))}** / {ms(percentile(g, 99) - percentile(d, 99))}",
            ]
        )
    failed = [sum(1 for t in turns if t.error) for turns in (direct_turns, gateway_turns)]
    rows.append([f"turns (failed): {len(direct_turns)} ({failed[0]}) / {len(gateway_turns)} ({failed[1]})", "", "", ""])
    return markdown_table(
        [f"{level} concurrent chats, one tool step each", "client loop p50 / p99 (ms)", "gateway loop", "added"],
        rows,
    )


@dataclass
class Figures:
    ttft: list[float]
    gaps: list[float]
    errors: int
    streams: int


def summarise(streams: list[Stream]) -> Figures:
    ok = [s for s in streams if not s.error and s.ttft]
    return Figures([s.ttft for s in ok], [g for s in ok for g in s.gaps], len(streams) - len(ok), len(streams))


async def closed_loop(
    level: int, per_worker: int, stagger: float, one: Callable[[int], Awaitable[Stream]]
) -> list[Stream]:
    """``level`` workers, each running ``per_worker`` streams one after another, their starts spread over one
    answer's duration: every stream is measured while about ``level`` others are in flight, as in steady
    use, rather than all of them arriving in the same millisecond."""
    rng = random.Random(level)

    async def worker(index: int) -> list[Stream]:
        if level > 1:
            await asyncio.sleep(rng.uniform(0, stagger))
        return [await one(index) for _ in range(per_worker)]

    results = await asyncio.gather(*(worker(i) for i in range(level)))
    return [stream for streams in results for stream in streams]


def ms(value: float) -> str:
    return f"{value * 1000:.2f}"


async def peak_rss(pid: int, interval: float = 0.05) -> int:
    """The highest resident memory of ``pid`` seen until cancelled (returned as the task's result)."""
    peak = 0
    try:
        while True:
            peak = max(peak, rss_bytes(pid))
            await asyncio.sleep(interval)
    except asyncio.CancelledError:
        return peak


async def run(
    args: argparse.Namespace, backend_url: str, grpc_target: str, token: str, meter: CpuMeter, mcp_url: str
) -> str:
    gateway_pid = meter.processes["gateway"]
    metadata = [("authorization", f"Bearer {token}")]
    channels = [grpc.aio.insecure_channel(grpc_target) for _ in range(8)]
    stubs = [chat_pb2_grpc.ChatServiceStub(c) for c in channels]
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60, connect=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        # Warm up: the gateway resolves and caches the model, both sides open connections.
        await asyncio.gather(*(gateway_stream(stubs[i % 8], metadata, [FAST]) for i in range(16)))
        await asyncio.gather(*(direct_stream(http, backend_url, FAST) for _ in range(16)))
        rows: list[list[str]] = []
        levels = args.levels
        per_worker = {1: 20 if args.quick else 60, 64: 2 if args.quick else 4, 512: 1 if args.quick else 2}
        answer_seconds = args.tokens * args.interval_ms / 1000
        for level in levels:
            STDERR.print(f"[dim]{level} concurrent streams …[/dim]")
            before_direct = meter.snapshot()
            direct = await closed_loop(
                level, per_worker[level], answer_seconds, lambda i: direct_stream(http, backend_url, FAST)
            )
            used_direct = CpuMeter.delta(before_direct, meter.snapshot())
            before = meter.snapshot()
            idle_rss = rss_bytes(gateway_pid)
            sampler = asyncio.create_task(peak_rss(gateway_pid))
            through = await closed_loop(
                level, per_worker[level], answer_seconds, lambda i: gateway_stream(stubs[i % 8], metadata, [FAST])
            )
            sampler.cancel()
            peak = max(await sampler, idle_rss)  # started long before: it returns its peak when cancelled
            used = CpuMeter.delta(before, meter.snapshot())
            tokens_through = sum(len(t.gaps) + 1 for t in through if t.ttft)
            server_ttfts = [t.server_ttft for t in through if t.server_ttft] or [0.0]
            d, g = summarise(direct), summarise(through)
            rows.append(
                [
                    str(level),
                    str(g.streams),
                    f"{ms(percentile(d.ttft, 50))} / {ms(percentile(d.ttft, 99))}",
                    f"{ms(percentile(g.ttft, 50))} / {ms(percentile(g.ttft, 99))}",
                    f"**{ms(percentile(g.ttft, 50) - percentile(d.ttft, 50))}** / "
                    f"**{ms(percentile(g.ttft, 99) - percentile(d.ttft, 99))}**",
                    f"{ms(percentile(d.gaps, 50))} / {ms(percentile(d.gaps, 99))}",
                    f"{ms(percentile(g.gaps, 50))} / {ms(percentile(g.gaps, 99))}",
                    f"{ms(percentile(g.gaps, 50) - percentile(d.gaps, 50))} / "
                    f"{ms(percentile(g.gaps, 99) - percentile(d.gaps, 99))}",
                    f"{d.errors} / {g.errors}",
                    f"{ms(percentile(server_ttfts, 50))} / {ms(percentile(server_ttfts, 99))}",
                    f"{used['gateway'] / max(tokens_through, 1) * 1e6:.0f}",
                    f"{used['gateway'] / used['wall'] * 100:.0f} %",
                    f"{used_direct['client'] / used_direct['wall'] * 100:.0f} % / "
                    f"{used['client'] / used['wall'] * 100:.0f} %",
                    f"{used['machine'] / used['wall'] * 100:.0f} %",
                    f"{idle_rss / 2**20:.0f} / {peak / 2**20:.0f} / {(peak - idle_rss) / level / 1024:.0f}",
                ]
            )
        latency = markdown_table(
            [
                "streams",
                "samples",
                "TTFT direct p50 / p99 (ms)",
                "TTFT gateway p50 / p99",
                "added TTFT p50 / p99",
                "per-token direct p50 / p99",
                "per-token gateway p50 / p99",
                "added per-token p50 / p99",
                "errors direct / gateway",
                "TTFT inside the gateway p50 / p99",
                "gateway CPU per token (µs)",
                "gateway CPU (of one core)",
                "bench client CPU direct / gateway (of one core)",
                "machine busy, gateway phase (of one core)",
                "gateway RSS before / peak (MiB) / growth per stream (KiB)",
            ],
            rows,
        )
        # Two models in one turn vs the slower one alone, one turn at a time.
        pairs, alone = [], []
        for _ in range(3 if args.quick else 10):
            alone.append((await gateway_stream(stubs[0], metadata, [SLOW])).total)
            pairs.append((await gateway_stream(stubs[0], metadata, [FAST, SLOW])).total)
        two = markdown_table(
            ["turn", "median wall time (s)", "ratio"],
            [
                ["slower model alone", f"{statistics.median(alone):.3f}", "1.00"],
                [
                    "both models, one turn",
                    f"{statistics.median(pairs):.3f}",
                    f"**{statistics.median(pairs) / statistics.median(alone):.3f}**",
                ],
            ],
        )
        tools = await tool_steps(args, stubs, metadata, http, backend_url, mcp_url)
    for channel in channels:
        await channel.close()
    return f"{latency}\n\n{two}\n\n{tools}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=32, help="tokens per answer (default 32)")
    parser.add_argument("--interval-ms", type=float, default=20.0, help="gap between tokens of the fast model")
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 64, 512], help="concurrency levels")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument(
        "--tool-concurrency", type=int, default=64, help="concurrent chats of the tool-step figure (default 64)"
    )
    parser.add_argument("--profile-gateway", type=Path, help="write a cProfile of the gateway process here")
    parser.add_argument("--serve-backend", nargs=3, metavar=("PORT", "TOKENS", "INTERVAL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_backend:
        port, tokens, interval = args.serve_backend
        serve_backend(int(port), int(tokens), float(interval))
        return 0
    sigterm_raises_interrupt()

    def log(message: str) -> None:
        STDERR.print(f"[dim]{message}[/dim]")

    with ExitStack() as cleanup:
        root = cleanup.enter_context(scratch_dir("mh-gw-", keep=args.keep, log=log))
        stack = cleanup.enter_context(BenchStack(root, durable_postgres=False))
        stack.start(log)
        secret = secrets.token_urlsafe(48)
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
        backend = BackendProcess(root / "backend", pick_free_port(), args.tokens, args.interval_ms / 1000)
        backend.start()
        cleanup.callback(backend.stop)
        registry_values = {
            **common,
            "port": pick_free_port(),
            "database_url": stack.database("modelhub_registry"),
            "connection_sync_seconds": 0,
            "allow_private_urls": True,  # the bench's backend is on loopback
        }
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
        admin = issue_token(secret, subject="root", role="admin", ttl_seconds=24 * 3600)
        tool_server = ToolServer(root / "mcp-tools", kind="mcp")
        tool_server.start()
        cleanup.callback(tool_server.stop)
        with httpx.Client(base_url=registry.base_url, headers={"Authorization": f"Bearer {admin}"}) as api:
            connection = api.post("/api/v1/connections", json={"type": "ollama", "url": backend.url}).json()
            api.post(f"/api/v1/connections/{connection['id']}/sync").raise_for_status()
            api.post(
                "/api/v1/tool-servers", json={"id": "bench-mcp", "name": "bench", "kind": "mcp", "url": tool_server.url}
            ).raise_for_status()
            api.post(
                "/api/v1/models",
                json={
                    "id": TOOL_MODEL,
                    "name": TOOL_MODEL,
                    "base_model_id": TOOLY,
                    "meta": {"toolIds": ["bench-mcp"]},
                    "access": {"public_read": True},
                },
            ).raise_for_status()
        grpc_port = pick_free_port()
        gateway_values = {
            **common,
            "port": pick_free_port(),
            "grpc_port": grpc_port,
            "database_url": stack.database("modelhub_gateway"),
            "database_pool_max": 20,
            "registry_url": registry.base_url,
            "rag_url": "http://127.0.0.1:9",
            "first_token_timeout_seconds": 120,
            "allow_private_urls": True,  # the bench's MCP tool server is on loopback
        }
        asyncio.run(gateway_bootstrap.run_migrations(ChatGatewaySettings(**gateway_values)))  # type: ignore[arg-type]
        gateway = (ProfiledService if args.profile_gateway else ServiceProcess)(
            root / "gateway",
            module="modelhub_chat_gateway",
            env=service_env(GATEWAY_PREFIX, gateway_values),
            port=int(str(gateway_values["port"])),
            name="gateway",
        )
        if isinstance(gateway, ProfiledService):
            gateway.profile_path = args.profile_gateway
        gateway.start()
        cleanup.callback(gateway.stop)
        log("stack, registry, gateway and backend are up")
        user = issue_token(secret, subject="bench", role="user", ttl_seconds=24 * 3600)
        meter = CpuMeter({"gateway": gateway.recorded_pid() or 0})
        tables = uvloop.run(run(args, backend.url, f"127.0.0.1:{grpc_port}", user, meter, tool_server.url))
    print(
        f"Run: {machine_summary()}; {args.tokens} tokens per answer, {args.interval_ms:g} ms apart "
        f"(the slow model {2 * args.interval_ms:g} ms).\n"
    )
    print(tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
