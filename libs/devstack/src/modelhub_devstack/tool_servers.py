"""Real tool servers for tests and the dev stack: an MCP server (the SDK's FastMCP over streamable HTTP) and an
OpenAPI server (FastAPI), each a separate process on a free loopback port.

Both offer the same tools: ``add(a, b)``, ``echo(text)``, ``sleep(seconds)`` (for timeouts), ``big(n)`` (``n``
characters), ``fail(message)`` (always fails with ``message``) and ``whoami()`` (the ``Authorization`` header it
received, or ``(none)``). The OpenAPI server also has ``get_item`` (``GET /items/{item_id}?verbose=``) to show
path and query parameters. Started with a token, every tool call without ``Authorization: Bearer <token>`` is
answered 401 (``/healthz`` and the OpenAPI document stay open).

Run one by hand: ``python -m modelhub_devstack.tool_server_apps mcp|openapi --port PORT [--token TOKEN]``.
The apps live in that separate module so that importing this one (the pytest plugin does) stays cheap.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from modelhub_devstack.ports import LOOPBACK, pick_free_port
from modelhub_devstack.server import ManagedServer, http_ok


class ToolServer(ManagedServer):
    """One of the two tool servers as a child process (``kind`` ``mcp`` or ``openapi``)."""

    start_timeout = 30.0
    stop_timeout = 5.0

    def __init__(self, workdir: Path, *, kind: str, token: str | None = None, port: int | None = None) -> None:
        if kind not in ("mcp", "openapi"):
            raise ValueError(f"kind must be 'mcp' or 'openapi', not {kind!r}")
        super().__init__(f"{kind}-tool-server", workdir)
        self.kind = kind
        self.token = token
        self.port = port if port is not None else pick_free_port()

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        """The MCP endpoint, or the OpenAPI document URL."""
        return f"{self.base_url}/mcp" if self.kind == "mcp" else f"{self.base_url}/openapi.json"

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "modelhub_devstack.tool_server_apps", self.kind, "--port", str(self.port)]
        if self.token:
            # Passed on the command line: a throwaway test token, visible in ps like the port.
            command += ["--token", self.token]
        return command

    def ports(self) -> Sequence[int]:
        return (self.port,)

    def is_healthy(self) -> bool:
        return http_ok(f"{self.base_url}/healthz")


@dataclass(frozen=True)
class ToolServerEndpoint:
    """What a test needs of a running tool server: ``url`` (MCP endpoint or OpenAPI document) and the bearer
    ``token`` it requires (None: it requires none)."""

    kind: str
    url: str
    token: str | None


__all__ = ["ToolServer", "ToolServerEndpoint"]
