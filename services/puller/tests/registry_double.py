"""A small HTTP front for the real OCI registry, for what Debian's docker-registry cannot do by itself.

It is a test double, not a registry: manifests and blob bytes always come from the real ``docker-registry``
behind it. In front of that it can

* demand a bearer token (401 + ``WWW-Authenticate: Bearer realm,service,scope``, token at ``/token``),
* redirect blob GETs to another path on the same host, or to another host name (``localhost`` instead of
  ``127.0.0.1``: a "CDN" that must not receive the registry's token),
* ignore ``Range`` and answer 200 with the whole blob (as some registries do),
* corrupt the bytes of chosen blobs, throttle blob bodies, and
* answer hf.co-style refusals (400 with a text body) for chosen tags.

It logs every blob request (path, Range, whether an Authorization header came with it).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from modelhub_devstack.ports import pick_free_port

TOKEN = "test-registry-token"
_PASS_HEADERS = ("content-type", "content-length", "content-range", "docker-content-digest", "accept-ranges")


@dataclass
class BlobRequest:
    path: str
    range: str | None
    authorized: bool
    digest: str


@dataclass
class DoubleConfig:
    require_token: bool = False
    redirect: Literal["none", "same-host", "cross-host"] = "none"
    ignore_range: bool = False
    corrupt: set[str] = field(default_factory=set)
    bytes_per_second: float | None = None
    refuse_tags: dict[str, str] = field(default_factory=dict)
    lowercase_repository: bool = False


class RegistryDouble:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = pick_free_port()
        self.config = DoubleConfig()
        self.requests: list[BlobRequest] = []
        self.token_requests = 0
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def cdn_host(self) -> str:
        return f"localhost:{self.port}"

    def reset(self, **config: object) -> None:
        self.config = DoubleConfig(**config)  # type: ignore[arg-type]
        with self._lock:
            self.requests.clear()
            self.token_requests = 0

    def blob_requests(self, digest: str | None = None) -> list[BlobRequest]:
        with self._lock:
            return [r for r in self.requests if digest is None or r.digest == digest]

    # ---- the app

    def _app(self) -> Starlette:
        async def token(request: Request) -> Response:
            with self._lock:
                self.token_requests += 1
            return JSONResponse({"token": TOKEN, "expires_in": 300})

        async def v2(request: Request) -> Response:
            path = request.path_params["path"]
            if self.config.require_token and request.headers.get("authorization") != f"Bearer {TOKEN}":
                repository = path.split("/manifests/")[0].split("/blobs/")[0]
                challenge = (
                    f'Bearer realm="http://{self.host}/token",service="double",scope="repository:{repository}:pull"'
                )
                return JSONResponse(
                    {"errors": [{"code": "UNAUTHORIZED"}]}, status_code=401, headers={"WWW-Authenticate": challenge}
                )
            if "/manifests/" in path:
                repository, _, tag = path.partition("/manifests/")
                if tag in self.config.refuse_tags:
                    return PlainTextResponse(self.config.refuse_tags[tag], status_code=400)
                return await self._manifest(repository, tag, request)
            if "/blobs/" in path:
                repository, _, digest = path.partition("/blobs/")
                if self.config.redirect == "same-host":
                    return RedirectResponse(f"/cdn/{repository}/{digest}?sig=same", status_code=307)
                if self.config.redirect == "cross-host":
                    return RedirectResponse(f"http://{self.cdn_host}/cdn/{repository}/{digest}?sig=x", status_code=307)
                return await self._blob(repository, digest, request)
            return PlainTextResponse("not found", status_code=404)

        async def cdn(request: Request) -> Response:
            return await self._blob(request.path_params["repository"], request.path_params["digest"], request)

        return Starlette(
            routes=[
                Route("/token", token),
                Route("/v2/{path:path}", v2),
                Route("/cdn/{repository:path}/{digest}", cdn),
            ]
        )

    def _repo(self, repository: str) -> str:
        return repository.lower() if self.config.lowercase_repository else repository

    async def _manifest(self, repository: str, tag: str, request: Request) -> Response:
        async with httpx.AsyncClient() as client:
            upstream = await client.get(
                f"{self.upstream}/v2/{self._repo(repository)}/manifests/{tag}",
                headers={"Accept": request.headers.get("accept", "")},
            )
        headers = {k: v for k, v in upstream.headers.items() if k.lower() in _PASS_HEADERS}
        headers.pop("content-length", None)
        return Response(upstream.content, status_code=upstream.status_code, headers=headers)

    async def _blob(self, repository: str, digest: str, request: Request) -> Response:
        range_header = None if self.config.ignore_range else request.headers.get("range")
        with self._lock:
            self.requests.append(
                BlobRequest(
                    path=request.url.path,
                    range=request.headers.get("range"),
                    authorized="authorization" in request.headers,
                    digest=digest,
                )
            )
        client = httpx.AsyncClient(timeout=60)
        upstream_request = client.build_request(
            "GET",
            f"{self.upstream}/v2/{self._repo(repository)}/blobs/{digest}",
            headers={"Range": range_header} if range_header else {},
        )
        upstream = await client.send(upstream_request, stream=True)
        headers = {k: v for k, v in upstream.headers.items() if k.lower() in _PASS_HEADERS}
        corrupt = digest in self.config.corrupt
        rate = self.config.bytes_per_second

        async def body() -> AsyncIterator[bytes]:
            first = True
            try:
                async for chunk in upstream.aiter_raw(64 * 1024):
                    if corrupt and first and chunk:
                        chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                    first = False
                    if rate:
                        await asyncio.sleep(len(chunk) / rate)
                    yield chunk
            finally:
                await upstream.aclose()
                await client.aclose()

        return StreamingResponse(body(), status_code=upstream.status_code, headers=headers)

    # ---- lifecycle

    def start(self) -> RegistryDouble:
        config = uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_config=None, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="registry-double", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the registry double did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
