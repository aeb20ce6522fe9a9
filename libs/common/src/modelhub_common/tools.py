"""Tool servers: discovering and calling the tools of an MCP server (streamable HTTP) or an OpenAPI service.

Admins register tool servers in the registry; the chat gateway runs their tools on the server side. This
module is the client both use:

* :func:`discover` lists a server's tools as :class:`ToolSpec` (name, description, JSON schema of the
  arguments) and raises :class:`ToolServerError` when it cannot;
* :func:`call_tool` runs one tool and never raises for tool or network failures: a failing tool is a result
  the model sees, so every failure becomes a :class:`ToolOutcome` with ``ok=False`` and an ``error_code``;
* :func:`validate_arguments` checks arguments against a tool's schema (``call_tool`` does it first);
* :func:`config_from_credentials` reads the registry's ``GET /api/v1/tool-servers/{id}/credentials`` answer.

OpenAPI tools carry their HTTP binding (method, path, where each argument goes) in ``ToolSpec.operation``,
filled by :func:`discover` and kept by ``to_dict``/``from_dict``. A spec without it still works: the call
then reads the document first (one more round trip).

For speed, pass one long-lived ``httpx.AsyncClient`` (its connection pool is reused; headers and timeouts of
each call are set per request), and for MCP a :class:`McpSessionCache`, which keeps an initialized session per
server and credential so a call is one round trip instead of four.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast
from urllib.parse import quote, urljoin, urlsplit

import anyio
import httpx
import jsonschema  # type: ignore[import-untyped]
from jsonschema.exceptions import best_match  # type: ignore[import-untyped]
from mcp import ClientSession, McpError, types
from mcp.client.streamable_http import streamable_http_client

from modelhub_common.errors import ModelhubError
from modelhub_common.url_policy import UrlNotAllowedError, check_outbound_url

logger = logging.getLogger(__name__)

ToolServerKind = Literal["mcp", "openapi"]
ToolAuth = Literal["none", "bearer", "forward"]
TOOL_SERVER_KINDS: tuple[ToolServerKind, ...] = ("mcp", "openapi")
TOOL_AUTHS: tuple[ToolAuth, ...] = ("none", "bearer", "forward")

_HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
_EXCERPT_CHARS = 300
_MAX_REF_DEPTH = 32
_EMPTY_OBJECT: dict[str, Any] = {"type": "object", "properties": {}}


class ToolServerError(ModelhubError):
    """Discovery failed: the server is unreachable, refused us, or answered something that is not a tool list.
    The message says what to check."""

    code = "tool_server_error"


@dataclass(frozen=True)
class ToolSpec:
    """One tool as a model sees it. ``operation`` (OpenAPI only) says how to call it over HTTP."""

    name: str
    description: str
    parameters: dict[str, Any]
    operation: dict[str, Any] | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "description": self.description, "parameters": self.parameters}
        if self.operation is not None:
            data["operation"] = self.operation
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ToolSpec:
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise ToolServerError("a tool needs a non-empty string 'name'")
        description = data.get("description") or ""
        parameters = data.get("parameters") or dict(_EMPTY_OBJECT)
        operation = data.get("operation")
        if not isinstance(description, str) or not isinstance(parameters, Mapping):
            raise ToolServerError(f"tool {name!r}: 'description' must be a string and 'parameters' an object")
        return cls(
            name=name,
            description=description,
            parameters=dict(parameters),
            operation=dict(operation) if isinstance(operation, Mapping) else None,
        )


@dataclass(frozen=True)
class ToolServerConfig:
    """Where a tool server is and how to talk to it (what the registry's credentials route answers)."""

    kind: ToolServerKind
    url: str
    auth: ToolAuth = "none"
    secret: str | None = None
    base_url: str | None = None
    timeout_seconds: float = 10.0
    max_result_bytes: int = 65536
    max_document_bytes: int = 1048576
    allow_private_urls: bool = False


@dataclass(frozen=True)
class ToolOutcome:
    """The result of one tool call; ``content`` is what the model sees, also on failure."""

    ok: bool
    content: str
    duration_seconds: float
    error_code: str | None = None
    truncated: bool = False


class _CallFailed(Exception):
    """Internal: a call failed in a way the model should be told about."""

    def __init__(self, error_code: str, content: str) -> None:
        super().__init__(content)
        self.error_code = error_code
        self.content = content


# --- shared helpers ---------------------------------------------------------------------------------------


def _auth_headers(config: ToolServerConfig, caller_token: str | None) -> dict[str, str]:
    if config.auth == "bearer" and config.secret:
        return {"Authorization": f"Bearer {config.secret}"}
    if config.auth == "forward" and caller_token:
        return {"Authorization": f"Bearer {caller_token}"}
    return {}


def _is_ip_literal(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _check_url(url: str, config: ToolServerConfig, what: str) -> None:
    # An IP literal needs no DNS lookup: checking it inline saves a thread hop on every call.
    if _is_ip_literal(url):
        check_outbound_url(url, allow_private=config.allow_private_urls, field=what)
    else:
        await asyncio.to_thread(check_outbound_url, url, allow_private=config.allow_private_urls, field=what)


def _cut(text: str, limit: int) -> tuple[str, bool]:
    data = text.encode()
    if len(data) <= limit:
        return text, False
    kept = data[:limit].decode(errors="ignore")
    return f"{kept}\n[result cut to {limit} of {len(data)} bytes]", True


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _EXCERPT_CHARS else text[:_EXCERPT_CHARS] + "…"


def _unwrap(exc: BaseException) -> BaseException:
    """The first leaf of (nested) exception groups, which anyio task groups wrap errors in."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe_http_error(exc: BaseException, url: str) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        hint = " (check the tool server's auth and secret)" if status in (401, 403) else ""
        return f"{url} answered HTTP {status}{hint}"
    if isinstance(exc, httpx.TimeoutException):
        return f"{url} did not answer in time"
    if isinstance(exc, httpx.HTTPError):
        return f"could not reach {url}: {type(exc).__name__} {exc}".rstrip()
    return f"{url}: {type(exc).__name__}: {exc}"


# --- argument validation ----------------------------------------------------------------------------------


def validate_arguments(spec: ToolSpec, arguments: object) -> str | None:
    """None when ``arguments`` fit the tool's schema, else a message naming the bad field."""
    if not isinstance(arguments, Mapping):
        return f"arguments of {spec.name} must be a JSON object, not {type(arguments).__name__}"
    schema = spec.parameters or _EMPTY_OBJECT
    try:
        validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        error = best_match(validator_class(schema).iter_errors(dict(arguments)))
    except (jsonschema.SchemaError, jsonschema.exceptions.UnknownType) as exc:
        return f"the schema of {spec.name} is not a valid JSON schema: {exc.message}"
    if error is None:
        return None
    where = ".".join(str(part) for part in error.absolute_path)
    if not where and error.validator == "required" and isinstance(error.validator_value, list):
        missing = [name for name in error.validator_value if name not in arguments]
        if missing:
            return f"{missing[0]}: is required"
    return f"{where or 'arguments'}: {error.message}"


# --- MCP --------------------------------------------------------------------------------------------------


class _NoTransport(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise RuntimeError("requests are sent through the shared client")


class _RequestShaper(httpx.AsyncClient):
    """Builds requests with this call's headers and timeout, and sends them through the shared client.

    The MCP SDK takes headers and timeouts from the client it is given; this lets one shared connection pool
    serve servers with different credentials, without copying the pool."""

    def __init__(self, shared: httpx.AsyncClient, headers: Mapping[str, str], timeout: float) -> None:
        super().__init__(headers=dict(headers), timeout=timeout, transport=_NoTransport(), trust_env=False)
        self._shared = shared

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        return await self._shared.send(request, **kwargs)


@contextlib.asynccontextmanager
async def _mcp_session(
    config: ToolServerConfig, headers: Mapping[str, str], http: httpx.AsyncClient | None
) -> AsyncIterator[ClientSession]:
    async with contextlib.AsyncExitStack() as stack:
        if http is None:
            client = await stack.enter_async_context(
                httpx.AsyncClient(headers=dict(headers), timeout=config.timeout_seconds)
            )
        else:
            client = _RequestShaper(http, headers, config.timeout_seconds)
        read, write, _ = await stack.enter_async_context(streamable_http_client(config.url, http_client=client))
        session = await stack.enter_async_context(ClientSession(read, write))
        await session.initialize()
        yield session


async def _mcp_list_tools(session: ClientSession, config: ToolServerConfig) -> list[ToolSpec]:
    specs: list[ToolSpec] = []
    size = 0
    cursor: str | None = None
    while True:
        params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
        result = await session.list_tools(params=params)
        for tool in result.tools:
            spec = ToolSpec(
                name=tool.name,
                description=tool.description or tool.title or "",
                parameters=dict(tool.inputSchema or _EMPTY_OBJECT),
            )
            size += len(json.dumps(spec.to_dict()))
            if size > config.max_document_bytes:
                raise ToolServerError(
                    f"{config.url}: the tool list is larger than {config.max_document_bytes} bytes; raise the "
                    "server's document limit or ask its owner to offer fewer tools"
                )
            specs.append(spec)
        cursor = result.nextCursor
        if not cursor:
            return specs


def _content_text(result: types.CallToolResult) -> str:
    parts: list[str] = []
    for item in result.content:
        if isinstance(item, types.TextContent):
            parts.append(item.text)
        elif isinstance(item, types.ImageContent):
            parts.append(f"[image ({item.mimeType}) not shown]")
        elif isinstance(item, types.AudioContent):
            parts.append(f"[audio ({item.mimeType}) not shown]")
        elif isinstance(item, types.ResourceLink):
            parts.append(f"[resource link: {item.uri}]")
        elif isinstance(item, types.EmbeddedResource):
            resource = item.resource
            if isinstance(resource, types.TextResourceContents):
                parts.append(resource.text)
            else:
                parts.append(f"[binary resource {resource.uri} not shown]")
    if not parts and result.structuredContent is not None:
        parts.append(json.dumps(result.structuredContent, ensure_ascii=False))
    return "\n".join(parts)


async def _mcp_call(session: ClientSession, spec: ToolSpec, arguments: Mapping[str, Any]) -> types.CallToolResult:
    # send_request, not session.call_tool: the latter lists the tools first to validate structured output,
    # one more round trip per call for a check the model does not need.
    request = types.ClientRequest(
        types.CallToolRequest(params=types.CallToolRequestParams(name=spec.name, arguments=dict(arguments)))
    )
    return await session.send_request(request, types.CallToolResult)


class McpSessionCache:
    """Initialized MCP sessions kept open per (endpoint, credential), so that a call costs one round trip.

    Each session lives in its own task (the SDK's task groups must be entered and left in one task). A
    session that fails is dropped and the call retried once on a fresh one. At most ``max_sessions`` are kept
    (least recently used closed first). Call :meth:`aclose` on shutdown.
    """

    def __init__(self, http: httpx.AsyncClient, *, max_sessions: int = 256) -> None:
        self._http = http
        self._max_sessions = max_sessions
        self._entries: OrderedDict[tuple[str, str, float], _CachedSession] = OrderedDict()
        self._lock = asyncio.Lock()

    async def _get(self, config: ToolServerConfig, headers: Mapping[str, str]) -> _CachedSession:
        key = (config.url, headers.get("Authorization", ""), config.timeout_seconds)
        async with self._lock:
            entry = self._entries.get(key)
            if entry is not None and not entry.closed:
                self._entries.move_to_end(key)
                return entry
            entry = _CachedSession(config, headers, self._http)
            self._entries[key] = entry
            while len(self._entries) > self._max_sessions:
                _, oldest = self._entries.popitem(last=False)
                oldest.close()
        return entry

    async def _drop(self, entry: _CachedSession) -> None:
        async with self._lock:
            for key, value in list(self._entries.items()):
                if value is entry:
                    del self._entries[key]
        entry.close()

    async def call(
        self, config: ToolServerConfig, headers: Mapping[str, str], spec: ToolSpec, arguments: Mapping[str, Any]
    ) -> types.CallToolResult:
        for attempt in (1, 2):
            entry = await self._get(config, headers)
            try:
                session = await entry.ready()
                return await _mcp_call(session, spec, arguments)
            except McpError:
                raise
            except Exception:
                await self._drop(entry)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        async with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
        for entry in entries:
            entry.close()
        for entry in entries:
            await entry.wait_closed()


class _CachedSession:
    def __init__(self, config: ToolServerConfig, headers: Mapping[str, str], http: httpx.AsyncClient) -> None:
        self._session: asyncio.Future[ClientSession] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self.closed = False
        self._task = asyncio.create_task(self._run(config, dict(headers), http), name=f"mcp-session {config.url}")

    async def _run(self, config: ToolServerConfig, headers: dict[str, str], http: httpx.AsyncClient) -> None:
        try:
            async with _mcp_session(config, headers, http) as session:
                if not self._session.done():
                    self._session.set_result(session)
                await self._stop.wait()
        except BaseException as exc:
            if not self._session.done():
                self._session.set_exception(_unwrap(exc) if isinstance(_unwrap(exc), Exception) else exc)
            if not isinstance(exc, Exception | BaseExceptionGroup):
                raise
        finally:
            self.closed = True
            if not self._session.done():
                self._session.set_exception(ToolServerError("the MCP session closed before it was ready"))
            # Mark the future's exception as retrieved: nobody may be waiting for it any more.
            if self._session.done() and not self._session.cancelled():
                self._session.exception()

    async def ready(self) -> ClientSession:
        return await asyncio.shield(self._session)

    def close(self) -> None:
        self.closed = True
        self._stop.set()

    async def wait_closed(self) -> None:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(self._task, timeout=5.0)


# --- OpenAPI ----------------------------------------------------------------------------------------------


async def _fetch_document(
    config: ToolServerConfig, headers: Mapping[str, str], http: httpx.AsyncClient
) -> dict[str, Any]:
    try:
        async with http.stream("GET", config.url, headers=dict(headers), timeout=config.timeout_seconds) as response:
            if response.status_code != 200:
                body = (await response.aread())[:1000].decode(errors="replace")
                hint = " (check the tool server's auth and secret)" if response.status_code in (401, 403) else ""
                raise ToolServerError(
                    f"{config.url} answered HTTP {response.status_code}{hint}: {_excerpt(body)}; the url must "
                    "be the OpenAPI document (e.g. https://tools.example.com/openapi.json)"
                )
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > config.max_document_bytes:
                raise ToolServerError(_too_large(config))
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > config.max_document_bytes:
                    raise ToolServerError(_too_large(config))
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise ToolServerError(_describe_http_error(exc, config.url)) from exc
    try:
        document = json.loads(b"".join(chunks))
    except ValueError as exc:
        raise ToolServerError(
            f"{config.url} is not a JSON OpenAPI document ({exc}); YAML documents are not read, serve the JSON form"
        ) from exc
    if not isinstance(document, dict) or not isinstance(document.get("paths"), dict):
        raise ToolServerError(f"{config.url} is not an OpenAPI document: it has no 'paths' object")
    return document


def _too_large(config: ToolServerConfig) -> str:
    return (
        f"{config.url}: the OpenAPI document is larger than {config.max_document_bytes} bytes; raise the "
        "server's document limit"
    )


def _resolve(node: Any, document: Mapping[str, Any], depth: int = 0) -> Any:
    """``node`` with every local ``$ref`` replaced by what it points to (recursive schemas cut at a depth)."""
    if depth > _MAX_REF_DEPTH:
        return {}
    if isinstance(node, Mapping):
        ref = node.get("$ref")
        if isinstance(ref, str):
            target = _follow_ref(ref, document)
            siblings = {key: value for key, value in node.items() if key != "$ref"}
            resolved = _resolve(target, document, depth + 1)
            if siblings and isinstance(resolved, dict):
                resolved = {**resolved, **_resolve(siblings, document, depth + 1)}
            return resolved
        return {key: _resolve(value, document, depth + 1) for key, value in node.items()}
    if isinstance(node, list):
        return [_resolve(item, document, depth + 1) for item in node]
    return node


def _follow_ref(ref: str, document: Mapping[str, Any]) -> Any:
    if not ref.startswith("#/"):
        raise ToolServerError(f"$ref {ref!r} points outside the document; only local references are supported")
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            raise ToolServerError(f"$ref {ref!r} does not resolve in the document")
        node = node[part]
    return node


def _document_base(config: ToolServerConfig, document: Mapping[str, Any]) -> str:
    if config.base_url:
        return config.base_url.rstrip("/")
    servers = document.get("servers")
    if isinstance(servers, list) and servers and isinstance(servers[0], Mapping):
        server_url = servers[0].get("url")
        if isinstance(server_url, str) and server_url and "{" not in server_url:
            return urljoin(config.url, server_url).rstrip("/")
    parts = urlsplit(config.url)
    return f"{parts.scheme}://{parts.netloc}"


def _operation_spec(
    name: str, method: str, path: str, path_item: Mapping[str, Any], operation: Mapping[str, Any], base: str
) -> ToolSpec:
    properties: dict[str, Any] = {}
    required: list[str] = []
    locations: dict[str, str] = {}
    raw_parameters = [*path_item.get("parameters", []), *operation.get("parameters", [])]
    for parameter in raw_parameters:
        if not isinstance(parameter, Mapping):
            continue
        where = parameter.get("in")
        param_name = parameter.get("name")
        if where not in ("path", "query") or not isinstance(param_name, str):
            continue
        schema = dict(parameter.get("schema") or {"type": "string"})
        if parameter.get("description") and "description" not in schema:
            schema["description"] = parameter["description"]
        properties[param_name] = schema
        locations[param_name] = where
        if parameter.get("required") or where == "path":
            required.append(param_name)
    body_mode: str | None = None
    body = operation.get("requestBody")
    if isinstance(body, Mapping):
        content = body.get("content")
        json_media = content.get("application/json") if isinstance(content, Mapping) else None
        if isinstance(json_media, Mapping):
            body_schema = json_media.get("schema") or {}
            body_props = body_schema.get("properties") if isinstance(body_schema, Mapping) else None
            if (
                isinstance(body_props, Mapping)
                and body_schema.get("type", "object") == "object"
                and not set(body_props) & set(properties)
            ):
                body_mode = "merged"
                for prop_name, prop_schema in body_props.items():
                    properties[prop_name] = prop_schema
                    locations[prop_name] = "body"
                required.extend(str(item) for item in body_schema.get("required", []) if isinstance(item, str))
            else:
                body_mode = "whole"
                properties["body"] = body_schema
                locations["body"] = "body"
                if body.get("required"):
                    required.append("body")
    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = sorted(set(required), key=required.index)
    description = str(operation.get("summary") or operation.get("description") or "")
    binding = {"method": method.upper(), "path": path, "base_url": base, "in": locations, "body": body_mode}
    return ToolSpec(name=name, description=description, parameters=parameters, operation=binding)


def _openapi_specs(config: ToolServerConfig, document: Mapping[str, Any]) -> list[ToolSpec]:
    resolved = _resolve(document, document)
    base = _document_base(config, document)
    specs: list[ToolSpec] = []
    for path, path_item in resolved.get("paths", {}).items():
        if not isinstance(path_item, Mapping):
            continue
        for method in _HTTP_METHODS:
            operation = path_item.get(method)
            if not isinstance(operation, Mapping):
                continue
            name = operation.get("operationId")
            if isinstance(name, str) and name:
                specs.append(_operation_spec(name, method, str(path), path_item, operation, base))
    return specs


async def _openapi_call(
    config: ToolServerConfig,
    spec: ToolSpec,
    arguments: Mapping[str, Any],
    headers: Mapping[str, str],
    http: httpx.AsyncClient,
) -> tuple[str, bool]:
    binding = spec.operation
    if binding is None:
        found = {item.name: item for item in _openapi_specs(config, await _fetch_document(config, headers, http))}
        if spec.name not in found:
            raise _CallFailed("unknown_tool", f"the tool server no longer offers a tool named {spec.name}")
        binding = found[spec.name].operation or {}
    locations: Mapping[str, str] = binding.get("in", {})
    path = str(binding.get("path", ""))
    query: dict[str, Any] = {}
    body: Any = None
    for key, value in arguments.items():
        where = locations.get(key)
        if where == "path":
            path = path.replace("{" + key + "}", quote(_scalar(value), safe=""))
        elif where == "query":
            query[key] = [_scalar(item) for item in value] if isinstance(value, list) else _scalar(value)
        elif where == "body" and binding.get("body") == "whole":
            body = value
        elif where == "body":
            body = {} if body is None else body
            body[key] = value
        else:
            raise _CallFailed("invalid_arguments", f"{key}: {spec.name} takes no such argument")
    if "{" in path:
        raise _CallFailed("invalid_arguments", f"{spec.name}: a path parameter is missing ({path})")
    if binding.get("body") == "merged" and body is None:
        body = {}
    base = config.base_url.rstrip("/") if config.base_url else str(binding.get("base_url") or "")
    url = base + path
    await _check_url(url, config, "base_url")
    request_headers = dict(headers)
    request_headers["Accept"] = "application/json, text/plain;q=0.9, */*;q=0.5"
    async with http.stream(
        str(binding.get("method", "GET")),
        url,
        params=query or None,
        json=body,
        headers=request_headers,
        timeout=config.timeout_seconds,
    ) as response:
        data, truncated = await _read_limited(response, config.max_result_bytes)
        text = data.decode(errors="replace")
        if not 200 <= response.status_code < 300:
            raise _CallFailed("tool_error", f"{spec.name} failed: HTTP {response.status_code}: {_excerpt(text)}")
    if truncated:
        text += f"\n[result cut to {config.max_result_bytes} bytes]"
    return text, truncated


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


async def _read_limited(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            data = b"".join(chunks)[:limit]
            # Cut on a character boundary so the excerpt stays valid text.
            return data.decode(errors="ignore").encode(), True
    return b"".join(chunks), False


# --- public entry points ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _client(http: httpx.AsyncClient | None, timeout: float) -> AsyncIterator[httpx.AsyncClient]:
    if http is not None:
        yield http
    else:
        async with httpx.AsyncClient(timeout=timeout) as own:
            yield own


async def discover(
    config: ToolServerConfig, *, caller_token: str | None = None, http: httpx.AsyncClient | None = None
) -> list[ToolSpec]:
    """The tools ``config``'s server offers. Raises :class:`ToolServerError` saying what went wrong."""
    try:
        await _check_url(config.url, config, "url")
    except UrlNotAllowedError as exc:
        raise ToolServerError(exc.message, code=exc.code) from exc
    headers = _auth_headers(config, caller_token)
    try:
        with anyio.fail_after(config.timeout_seconds):
            if config.kind == "mcp":
                async with _mcp_session(config, headers, http) as session:
                    specs = await _mcp_list_tools(session, config)
            else:
                async with _client(http, config.timeout_seconds) as client:
                    specs = _openapi_specs(config, await _fetch_document(config, headers, client))
    except ToolServerError:
        raise
    except TimeoutError as exc:
        raise ToolServerError(
            f"{config.url} did not list its tools within {config.timeout_seconds:g} s; check that it is up, "
            "or raise the server's timeout"
        ) from exc
    except McpError as exc:
        raise ToolServerError(f"{config.url}: the MCP server refused to list its tools: {exc.error.message}") from exc
    except Exception as exc:
        cause = _unwrap(exc)
        if isinstance(cause, ToolServerError):
            raise cause from exc
        message = _describe_http_error(cause, config.url)
        if config.kind == "mcp" and not (
            isinstance(cause, httpx.HTTPStatusError) and cause.response.status_code in (401, 403)
        ):
            message += "; the url must be an MCP streamable-HTTP endpoint (e.g. http://host:8000/mcp) that is up"
        raise ToolServerError(message) from exc
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ToolServerError(f"{config.url} offers several tools named {', '.join(duplicates)}; names must be unique")
    return specs


async def call_tool(
    config: ToolServerConfig,
    spec: ToolSpec,
    arguments: Mapping[str, Any],
    *,
    caller_token: str | None = None,
    http: httpx.AsyncClient | None = None,
    sessions: McpSessionCache | None = None,
) -> ToolOutcome:
    """Run one tool. Never raises for tool or network failures: they come back as ``ok=False`` outcomes."""
    began = time.perf_counter()
    problem = validate_arguments(spec, arguments)
    if problem is not None:
        return ToolOutcome(False, f"invalid arguments: {problem}", time.perf_counter() - began, "invalid_arguments")
    headers = _auth_headers(config, caller_token)
    try:
        with anyio.fail_after(config.timeout_seconds):
            await _check_url(config.url, config, "url")
            if config.kind == "mcp":
                if sessions is not None:
                    result = await sessions.call(config, headers, spec, arguments)
                else:
                    async with _mcp_session(config, headers, http) as session:
                        result = await _mcp_call(session, spec, arguments)
                text, truncated = _cut(_content_text(result), config.max_result_bytes)
                if result.isError:
                    raise _CallFailed("tool_error", f"{spec.name} failed: {text}")
            else:
                async with _client(http, config.timeout_seconds) as client:
                    text, truncated = await _openapi_call(config, spec, arguments, headers, client)
    except _CallFailed as failure:
        return ToolOutcome(False, failure.content, time.perf_counter() - began, failure.error_code)
    except TimeoutError:
        message = f"{spec.name} did not finish within {config.timeout_seconds:g} s"
        return ToolOutcome(False, message, time.perf_counter() - began, "timeout")
    except UrlNotAllowedError as exc:
        return ToolOutcome(
            False, f"{spec.name} cannot be called: {exc.message}", time.perf_counter() - began, "unreachable"
        )
    except McpError as exc:
        return ToolOutcome(False, _mcp_error_text(spec, exc), time.perf_counter() - began, _mcp_error_code(exc))
    except Exception as exc:
        cause = _unwrap(exc)
        if isinstance(cause, McpError):
            return ToolOutcome(False, _mcp_error_text(spec, cause), time.perf_counter() - began, _mcp_error_code(cause))
        if isinstance(cause, TimeoutError):
            message = f"{spec.name} did not finish within {config.timeout_seconds:g} s"
            return ToolOutcome(False, message, time.perf_counter() - began, "timeout")
        logger.info(
            "tool call failed",
            extra={"tool": spec.name, "tool_server_url": config.url, "error": type(cause).__name__},
        )
        message = f"{spec.name} could not be run: {_describe_http_error(cause, config.url)}"
        return ToolOutcome(False, message, time.perf_counter() - began, "unreachable")
    return ToolOutcome(True, text, time.perf_counter() - began, None, truncated)


def _mcp_error_code(exc: McpError) -> str:
    if exc.error.code == types.INVALID_PARAMS:
        return "invalid_arguments"
    if exc.error.code == types.METHOD_NOT_FOUND:
        return "unknown_tool"
    return "tool_error"


def _mcp_error_text(spec: ToolSpec, exc: McpError) -> str:
    return f"{spec.name} failed: {exc.error.message}"


def config_from_credentials(body: Mapping[str, Any], *, allow_private_urls: bool) -> ToolServerConfig:
    """The :class:`ToolServerConfig` in a registry credentials answer; :class:`ToolServerError` if malformed."""
    kind = body.get("kind")
    url = body.get("url")
    auth = body.get("auth") or "none"
    secret = body.get("secret")
    base_url = body.get("base_url")
    if kind not in TOOL_SERVER_KINDS:
        raise ToolServerError(f"credentials: kind must be one of {', '.join(TOOL_SERVER_KINDS)}, not {kind!r}")
    if not isinstance(url, str) or not url:
        raise ToolServerError("credentials: url must be a non-empty string")
    if auth not in TOOL_AUTHS:
        raise ToolServerError(f"credentials: auth must be one of {', '.join(TOOL_AUTHS)}, not {auth!r}")
    if secret is not None and not isinstance(secret, str):
        raise ToolServerError("credentials: secret must be a string or null")
    if auth == "bearer" and not secret:
        raise ToolServerError("credentials: auth 'bearer' needs a secret")
    if base_url is not None and not isinstance(base_url, str):
        raise ToolServerError("credentials: base_url must be a string or null")
    timeout = body.get("timeout_seconds", 10.0)
    max_result = body.get("max_result_bytes", 65536)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ToolServerError("credentials: timeout_seconds must be a positive number")
    if isinstance(max_result, bool) or not isinstance(max_result, int) or max_result <= 0:
        raise ToolServerError("credentials: max_result_bytes must be a positive integer")
    return ToolServerConfig(
        kind=cast(ToolServerKind, kind),
        url=url,
        auth=cast(ToolAuth, auth),
        secret=secret or None,
        base_url=base_url or None,
        timeout_seconds=float(timeout),
        max_result_bytes=max_result,
        allow_private_urls=allow_private_urls,
    )


__all__ = [
    "TOOL_AUTHS",
    "TOOL_SERVER_KINDS",
    "McpSessionCache",
    "ToolAuth",
    "ToolOutcome",
    "ToolServerConfig",
    "ToolServerError",
    "ToolServerKind",
    "ToolSpec",
    "call_tool",
    "config_from_credentials",
    "discover",
    "validate_arguments",
]
