"""The HTTP/1.1 client the Ollama and OpenAI-compatible backends stream answers with.

aiohttp rather than httpx: its C parser hands each chunk of the body straight to the waiting reader, while
httpx passes every read through anyio cancel scopes and h11. Per streamed token that is about a tenth of the
CPU, and the client was the largest part of what the gateway spent per token.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Self

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from modelhub_chat_gateway.adapters.backends.base import http_error
from modelhub_chat_gateway.errors import BackendError, BackendTimeoutError
from modelhub_common import tracing

__all__ = ["StreamingHttpClient", "transport_error"]

_Proxy = tuple[URL, aiohttp.BasicAuth | None] | None


def transport_error(exc: aiohttp.ClientError, url: str) -> BackendError:
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return BackendTimeoutError(f"connecting to {url} timed out", code="connect_timeout")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return BackendError(f"cannot connect to {url}", code="backend_unavailable")
    return BackendError(f"the connection to {url} failed: {type(exc).__name__}", code="backend_unavailable")


class BodyLines:
    """The lines of a streamed body as bytes, without their line ends. A plain async iterator rather than an
    async generator, so that leaving a stream early leaves no generator for the event loop to finalise."""

    def __init__(self, content: aiohttp.StreamReader) -> None:
        self._content = content
        self._lines: deque[bytes] = deque()
        self._partial = b""

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        while not self._lines:
            chunk = await self._content.readany()
            if not chunk:
                if self._partial.strip():
                    line, self._partial = self._partial, b""
                    return line
                raise StopAsyncIteration
            *complete, self._partial = (self._partial + chunk).split(b"\n")
            self._lines.extend(line.rstrip(b"\r") for line in complete)
        return self._lines.popleft()


class StreamingHttpClient:
    """One connection pool for every streaming backend. Read timeouts are not set here: the gateway enforces
    its own (first token, idle between tokens) per answer, whatever the backend."""

    def __init__(self, *, connect_timeout: float) -> None:
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None
        # Proxies from the environment, looked up once per origin: aiohttp's own lookup (trust_env) reads the
        # environment and ~/.netrc again on every request, which costs more than the rest of starting a stream.
        self._proxies: dict[tuple[str, str | None, int | None], _Proxy] = {}

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, connect=self._connect_timeout),
            auto_decompress=True,
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _proxy(self, url: URL) -> _Proxy:
        origin = (url.scheme, url.host, url.port)
        if origin not in self._proxies:
            try:
                self._proxies[origin] = get_env_proxy_for_url(url)
            except LookupError:
                self._proxies[origin] = None
        return self._proxies[origin]

    @contextlib.asynccontextmanager
    async def post_lines(self, url: str, body: dict[str, Any], api_key: str | None) -> AsyncIterator[BodyLines]:
        """POSTs ``body`` as JSON and yields the answer's lines; an answer other than 200 becomes a
        :class:`BackendError` with the server's message, transport failures too. Leaving the block before the
        end of the body closes the connection, which is what stops the backend's generation."""
        if self._session is None:
            raise RuntimeError("the streaming HTTP client is not open")
        # A key is sent as a bearer token (OpenAI, or Ollama behind an authenticating proxy).
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        tracing.inject_headers(headers)  # the backend call's span (see Generator.stream), when tracing is on
        target = URL(url)
        proxy = self._proxy(target)
        try:
            async with self._session.post(
                target,
                json=body,
                headers=headers,
                proxy=proxy[0] if proxy else None,
                proxy_auth=proxy[1] if proxy else None,
            ) as response:
                if response.status != 200:
                    raise http_error(response.status, await response.read(), url)
                yield BodyLines(response.content)
        except aiohttp.ClientError as exc:
            raise transport_error(exc, url) from exc
