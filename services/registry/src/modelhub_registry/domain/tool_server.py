"""Tool servers: MCP or OpenAPI services whose tools model files use (``meta.toolIds`` names them).

Who may use one follows Open WebUI's ``access_control``: ``null`` lets every user use it; otherwise only the
users and groups listed under ``read`` (a ``write`` grant implies read). Admins always may.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from modelhub_common.auth import Principal
from modelhub_common.tools import ToolAuth, ToolServerKind

TOOL_SERVER_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# Open WebUI names a tool server in toolIds as "server:{id}" (OpenAPI) or "server:mcp:{id}" (MCP).
_TOOL_ID_PREFIXES = ("server:mcp:", "server:")


@dataclass(frozen=True)
class ToolServerLimits:
    """Bounds from the registry's settings."""

    max_tool_servers: int = 100
    max_tools_per_server: int = 128
    min_timeout_seconds: float = 0.5
    max_timeout_seconds: float = 120.0
    max_result_bytes: int = 1_048_576
    max_document_bytes: int = 4_194_304
    #: Hosts tool servers may live on (``host``, ``host:port`` or ``*.domain``); empty: any host the URL
    #: policy allows.
    allowed_hosts: tuple[str, ...] = ()

    def host_allowed(self, url: str) -> bool:
        if not self.allowed_hosts:
            return True
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        with_port = f"{host}:{parts.port}" if parts.port else host
        for allowed in self.allowed_hosts:
            allowed = allowed.lower().strip()
            if allowed.startswith("*."):
                if host.endswith(allowed[1:]):
                    return True
            elif allowed in (host, with_port):
                return True
        return False


class AccessIds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_ids: list[str] = Field(default_factory=list, max_length=1000)
    group_ids: list[str] = Field(default_factory=list, max_length=1000)


class AccessControl(BaseModel):
    """Open WebUI's shape: ``{"read": {"user_ids": [...], "group_ids": [...]}, "write": {...}}``."""

    model_config = ConfigDict(extra="forbid")

    read: AccessIds = Field(default_factory=AccessIds)
    write: AccessIds = Field(default_factory=AccessIds)


class ToolServer(BaseModel):
    """A stored tool server. ``secret`` is held here but never dumped by :meth:`public_json`."""

    id: str
    name: str
    description: str = ""
    kind: ToolServerKind
    url: str
    base_url: str | None = None
    auth: ToolAuth = "none"
    secret: str | None = None
    timeout_seconds: float
    max_result_bytes: int
    access_control: AccessControl | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list)
    refreshed_at: datetime | None = None
    last_error: str | None = None
    created_at: datetime
    updated_at: datetime
    version: int = 1

    def admin_json(self) -> dict[str, Any]:
        """Everything but the secret (its presence is shown as ``has_secret``)."""
        body = self.model_dump(mode="json", exclude={"secret"})
        body["has_secret"] = self.secret is not None
        return body

    def usable_json(self) -> dict[str, Any]:
        """What any user who may use the server sees (no URL, auth or access lists)."""
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "kind": self.kind,
            "tools": self.tools,
            "refreshed_at": self.model_dump(mode="json", include={"refreshed_at"})["refreshed_at"],
            "error": self.last_error,
        }

    def credentials_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "url": self.url,
            "base_url": self.base_url,
            "auth": self.auth,
            "secret": self.secret,
            "timeout_seconds": self.timeout_seconds,
            "max_result_bytes": self.max_result_bytes,
        }


def may_use(server: ToolServer, principal: Principal) -> bool:
    if principal.is_admin or server.access_control is None:
        return True
    for ids in (server.access_control.read, server.access_control.write):
        if principal.subject in ids.user_ids or principal.in_any_group(ids.group_ids):
            return True
    return False


def tool_server_id_of(tool_id: str) -> str:
    """The tool server id a ``meta.toolIds`` entry names: itself, or after Open WebUI's ``server:`` prefixes."""
    for prefix in _TOOL_ID_PREFIXES:
        if tool_id.startswith(prefix):
            return tool_id[len(prefix) :]
    return tool_id
