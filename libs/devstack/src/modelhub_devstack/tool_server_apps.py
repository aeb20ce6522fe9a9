"""The ASGI apps of the test tool servers (see :mod:`modelhub_devstack.tool_servers`), and their process entry
point: ``python -m modelhub_devstack.tool_server_apps mcp|openapi --port PORT [--token TOKEN]``."""

from __future__ import annotations

import argparse
import asyncio
import hmac
from collections.abc import Sequence
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from mcp.server.fastmcp import Context, FastMCP
from pydantic import BaseModel, Field

from modelhub_devstack.ports import LOOPBACK

_MAX_SLEEP_SECONDS = 60.0
_MAX_BIG = 10_000_000
_OPEN_PATHS = frozenset({"/healthz", "/openapi.json"})


class _RequireBearer:
    """ASGI wrapper answering 401 to requests without the expected bearer token, and 200 on ``/healthz``."""

    def __init__(self, app: Any, token: str | None) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path = scope.get("path", "")
            if path == "/healthz":
                await _plain(send, 200, b"ok")
                return
            if self.expected is not None and path not in _OPEN_PATHS:
                given = dict(scope.get("headers", [])).get(b"authorization", b"")
                if not hmac.compare_digest(given, self.expected):
                    await _plain(send, 401, b'{"error": "a valid bearer token is required"}')
                    return
        await self.app(scope, receive, send)


async def _plain(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def mcp_app(token: str | None) -> Any:
    """The MCP server's ASGI app: endpoint ``/mcp``, stateless, JSON answers."""
    server = FastMCP("modelhub-test-tools", stateless_http=True, json_response=True, log_level="WARNING")

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    @server.tool(description="Answer the text unchanged.")
    def echo(text: str) -> str:
        return text

    @server.tool(description="Wait this many seconds, then answer 'slept'.")
    async def sleep(seconds: float) -> str:
        await asyncio.sleep(min(max(seconds, 0.0), _MAX_SLEEP_SECONDS))
        return "slept"

    @server.tool(description="Answer a text of n characters.")
    def big(n: int) -> str:
        return "x" * min(max(n, 0), _MAX_BIG)

    @server.tool(description="Always fail with this message.")
    def fail(message: str) -> str:
        raise ValueError(message)

    @server.tool(description="Answer the Authorization header this server received.")
    def whoami(ctx: Context) -> str:  # type: ignore[type-arg]
        request = ctx.request_context.request
        headers = getattr(request, "headers", None)
        value = headers.get("authorization") if headers is not None else None
        return str(value) if value else "(none)"

    return _RequireBearer(server.streamable_http_app(), token)


class AddRequest(BaseModel):
    a: int = Field(description="first addend")
    b: int = Field(description="second addend")


class FailRequest(BaseModel):
    message: str


def openapi_app(token: str | None) -> Any:
    """The OpenAPI server's ASGI app: document at ``/openapi.json``, one operation per tool."""
    app = FastAPI(title="modelhub test tools", version="1.0")

    @app.post("/add", operation_id="add", summary="Add two integers.")
    def add(body: AddRequest) -> int:
        return body.a + body.b

    @app.get("/echo", operation_id="echo", summary="Answer the text unchanged.")
    def echo(text: str) -> str:
        return text

    @app.get("/sleep", operation_id="sleep", summary="Wait this many seconds, then answer 'slept'.")
    async def sleep(seconds: float) -> str:
        await asyncio.sleep(min(max(seconds, 0.0), _MAX_SLEEP_SECONDS))
        return "slept"

    @app.get("/big", operation_id="big", summary="Answer a text of n characters.")
    def big(n: int) -> str:
        return "x" * min(max(n, 0), _MAX_BIG)

    @app.post("/fail", operation_id="fail", summary="Always fail with this message.")
    def fail(body: FailRequest) -> str:
        raise HTTPException(status_code=500, detail=body.message)

    @app.get("/whoami", operation_id="whoami", summary="Answer the Authorization header this server received.")
    def whoami(request: Request) -> str:
        return request.headers.get("authorization") or "(none)"

    @app.get("/items/{item_id}", operation_id="get_item", summary="Describe one item.")
    def get_item(item_id: int, verbose: bool = False) -> dict[str, Any]:
        return {"item_id": item_id, "verbose": verbose}

    return _RequireBearer(app, token)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m modelhub_devstack.tool_server_apps", description=__doc__)
    parser.add_argument("kind", choices=["mcp", "openapi"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", default=None, help="require this bearer token on every tool call")
    args = parser.parse_args(argv)

    app = mcp_app(args.token) if args.kind == "mcp" else openapi_app(args.token)
    uvicorn.run(app, host=LOOPBACK, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()

__all__ = ["main", "mcp_app", "openapi_app"]
