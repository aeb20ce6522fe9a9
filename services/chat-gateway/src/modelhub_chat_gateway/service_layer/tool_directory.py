"""Turns a model file's ``toolIds`` into the tools one caller may run, through the registry.

The tools of a server are read with the caller's own token, so the registry's access rules decide which tool
servers a caller may use (one the caller may not use looks exactly like one that does not exist). Where the
server is and its secret are read with the gateway's service token. Both are cached for ``ttl`` seconds and
dropped at once when the registry announces a change to a tool server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from modelhub_chat_gateway.adapters.registry_client import RegistryClient
from modelhub_chat_gateway.domain.chat_types import BackendWarning
from modelhub_chat_gateway.domain.tools import Toolkit, build_toolkit, server_id_of
from modelhub_chat_gateway.errors import RegistryUnavailableError
from modelhub_chat_gateway.service_layer.model_catalog import Caller
from modelhub_common.tools import ToolServerConfig, ToolServerError, ToolSpec, config_from_credentials

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedTools:
    toolkit: Toolkit
    #: One per tool id that could not be honoured (unknown, not allowed, or its server has no tools now).
    warnings: tuple[BackendWarning, ...] = ()


class ToolDirectory:
    def __init__(self, registry: RegistryClient, *, ttl: float, allow_private_urls: bool) -> None:
        self._registry = registry
        self._ttl = ttl
        self._allow_private = allow_private_urls
        # (server id, caller key) -> (expiry, the tools, or None when the caller may not use the server)
        self._tools: dict[tuple[str, tuple[str, str, frozenset[str]]], tuple[float, tuple[ToolSpec, ...] | None]] = {}
        self._configs: dict[str, tuple[float, ToolServerConfig | None]] = {}

    def invalidate(self) -> None:
        self._tools.clear()
        self._configs.clear()

    async def resolve(self, tool_ids: Sequence[str], caller: Caller) -> ResolvedTools:
        if not tool_ids:
            return ResolvedTools(Toolkit())
        server_ids = list(dict.fromkeys(server_id_of(t) for t in tool_ids))
        found = await asyncio.gather(*(self._server(s, caller) for s in server_ids))
        servers: list[tuple[str, ToolServerConfig, tuple[ToolSpec, ...]]] = []
        warnings: list[BackendWarning] = []
        for server_id, (config, specs, problem) in zip(server_ids, found, strict=True):
            if problem:
                warnings.append(BackendWarning("tool_unavailable", problem))
            elif config is not None:
                servers.append((server_id, config, specs))
        return ResolvedTools(build_toolkit(servers), tuple(warnings))

    async def _server(
        self, server_id: str, caller: Caller
    ) -> tuple[ToolServerConfig | None, tuple[ToolSpec, ...], str | None]:
        try:
            specs = await self._specs(server_id, caller)
            if specs is None:
                return (
                    None,
                    (),
                    (f"tool server '{server_id}' does not exist or you may not use it: its tools are left out"),
                )
            if not specs:
                return None, (), f"tool server '{server_id}' offers no tools right now (an admin can refresh it)"
            config = await self._config(server_id)
        except (RegistryUnavailableError, ToolServerError) as exc:
            return None, (), f"tool server '{server_id}' cannot be used now: {exc.message}"
        if config is None:
            return None, (), f"tool server '{server_id}' was removed: its tools are left out"
        return config, specs, None

    async def _specs(self, server_id: str, caller: Caller) -> tuple[ToolSpec, ...] | None:
        key = (server_id, caller.cache_key)
        cached = self._tools.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        body = await self._registry.tool_server(server_id, caller.token)
        specs = None
        if body is not None:
            specs = tuple(ToolSpec.from_dict(t) for t in body.get("tools") or [] if isinstance(t, dict))
        self._tools[key] = (time.monotonic() + self._ttl, specs)
        return specs

    async def _config(self, server_id: str) -> ToolServerConfig | None:
        cached = self._configs.get(server_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        body = await self._registry.tool_server_credentials(server_id)
        config = None if body is None else config_from_credentials(body, allow_private_urls=self._allow_private)
        self._configs[server_id] = (time.monotonic() + self._ttl, config)
        return config
