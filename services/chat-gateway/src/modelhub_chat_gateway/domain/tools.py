"""Server-side tools: the tools of a model file's tool servers, as a model is offered them, and the record of
each call the gateway ran for it."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from modelhub_chat_gateway.domain.chat_types import ToolDefinition
from modelhub_common.tools import ToolServerConfig, ToolSpec

#: What OpenAI (and so most backends) accept as a function name.
_NAME = re.compile(r"[^A-Za-z0-9_-]")
_NAME_LIMIT = 64

#: Open WebUI writes tool-server ids in ``toolIds`` with these prefixes.
_OPENWEBUI_PREFIXES = ("server:mcp:", "server:")


def server_id_of(tool_id: str) -> str:
    """The tool server a ``toolIds`` entry names (``weather``, ``server:weather``, ``server:mcp:weather``)."""
    for prefix in _OPENWEBUI_PREFIXES:
        if tool_id.startswith(prefix):
            return tool_id[len(prefix) :]
    return tool_id


def split_action(action_id: str) -> tuple[str, str | None]:
    """An ``actionIds`` entry is ``server/tool``, or a server id alone when that server has a single tool."""
    server, _, tool = action_id.partition("/")
    return server_id_of(server), (tool or None)


def text_parameter(schema: Mapping[str, Any]) -> str | None:
    """The argument an action's answer text goes in: ``text`` or ``content`` if the tool has one, else its
    first required string parameter, else its first string parameter."""
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return None
    strings = [n for n, p in properties.items() if isinstance(p, dict) and p.get("type") == "string"]
    for preferred in ("text", "content", "input"):
        if preferred in strings:
            return preferred
    required = schema.get("required")
    for name in required if isinstance(required, list) else []:
        if name in strings:
            return str(name)
    return strings[0] if strings else None


def action_name(action_id: str) -> str:
    server, tool = split_action(action_id)
    return tool or server


@dataclass(frozen=True)
class ServerTool:
    """One tool of a tool server, with the name the model calls it by (its own name unless two servers offer
    the same one; then it is prefixed with its server's id)."""

    name: str
    server_id: str
    spec: ToolSpec
    config: ToolServerConfig = field(repr=False)

    def definition(self) -> ToolDefinition:
        return ToolDefinition(self.name, self.spec.description, dict(self.spec.parameters))


@dataclass(frozen=True)
class Toolkit:
    """The server-side tools one answer may call, by the name the model uses."""

    tools: Mapping[str, ServerTool] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.tools)

    def __contains__(self, name: object) -> bool:
        return name in self.tools

    def get(self, name: str) -> ServerTool | None:
        return self.tools.get(name)

    def definitions(self) -> tuple[ToolDefinition, ...]:
        return tuple(t.definition() for t in self.tools.values())


def _clean(name: str) -> str:
    return _NAME.sub("_", name)[:_NAME_LIMIT] or "tool"


def build_toolkit(servers: Iterable[tuple[str, ToolServerConfig, Iterable[ToolSpec]]]) -> Toolkit:
    """Names each tool for the model; a name two servers share is prefixed with the server id on both."""
    entries = [(server_id, config, spec) for server_id, config, specs in servers for spec in specs]
    counts: dict[str, int] = {}
    for _, _, spec in entries:
        counts[_clean(spec.name)] = counts.get(_clean(spec.name), 0) + 1
    tools: dict[str, ServerTool] = {}
    for server_id, config, spec in entries:
        name = _clean(spec.name)
        if counts[name] > 1:
            name = _clean(f"{server_id}__{spec.name}")
        if name in tools:  # still ambiguous after prefixing (two identical servers): the first one wins
            continue
        tools[name] = ServerTool(name, server_id, spec, config)
    return Toolkit(tools)


@dataclass
class ToolStepRecord:
    """One tool call the gateway ran while producing an answer, and its result (stored with the answer)."""

    step: int
    call_id: str
    tool: str
    server_id: str
    arguments: str
    ok: bool = False
    content: str = ""
    error_code: str = ""
    duration_seconds: float = 0.0
    truncated: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ToolStepRecord:
        return cls(
            step=int(data.get("step", 0)),
            call_id=str(data.get("call_id", "")),
            tool=str(data.get("tool", "")),
            server_id=str(data.get("server_id", "")),
            arguments=str(data.get("arguments", "")),
            ok=bool(data.get("ok", False)),
            content=str(data.get("content", "")),
            error_code=str(data.get("error_code", "")),
            duration_seconds=float(data.get("duration_seconds", 0.0)),
            truncated=bool(data.get("truncated", False)),
        )
