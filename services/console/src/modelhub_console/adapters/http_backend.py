"""Calls to the services' REST APIs with the user's bearer token; their errors become :class:`BackendError`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

from modelhub_console.errors import BackendError, BackendUnavailableError, SignInRequiredError


def _error_of(response: httpx.Response) -> BackendError:
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return BackendError(
            response.status_code,
            str(error.get("code", "error")),
            str(error.get("message", "")),
            error.get("details"),
        )
    return BackendError(response.status_code, "error", f"the service answered {response.status_code}")


class RestBackend:
    """One service's REST API (the registry or the puller)."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, name: str) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.name = name

    async def request(
        self, method: str, path: str, token: str | None, *, allow_401: bool = False, **kwargs: Any
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = await self.http.request(method, self.base_url + path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise BackendUnavailableError(f"the {self.name} is unreachable ({type(exc).__name__})") from exc
        if response.status_code == 401 and token is not None:
            if allow_401:
                return response
            raise SignInRequiredError("your sign-in is no longer accepted; sign in again")
        if response.status_code >= 400:
            raise _error_of(response)
        return response

    async def json(self, method: str, path: str, token: str | None, **kwargs: Any) -> Any:
        return (await self.request(method, path, token, **kwargs)).json()

    async def stream_lines(self, path: str, token: str, *, accept: str) -> AsyncIterator[str]:
        """The lines of a streamed answer (server-sent events or NDJSON), as they arrive."""
        headers = {"Authorization": f"Bearer {token}", "Accept": accept}
        try:
            async with self.http.stream("GET", self.base_url + path, headers=headers, timeout=None) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _error_of(response)
                async for line in response.aiter_lines():
                    yield line
        except httpx.HTTPError as exc:
            raise BackendUnavailableError(f"the {self.name} stream broke ({type(exc).__name__})") from exc
