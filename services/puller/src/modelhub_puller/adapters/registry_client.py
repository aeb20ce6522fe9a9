"""The registry pull protocol that registry.ollama.ai and hf.co speak (PROTOCOLS.md §2–3), over httpx.

* Manifests: ``GET /v2/{ns}/{model}/manifests/{tag}`` with an ``Accept`` header (registries refuse without).
* Auth: a 401 with ``WWW-Authenticate: Bearer realm,service,scope`` is answered by fetching a token from the
  realm (which must be the registry's own host or an allowed host) and retrying.
* Blobs: redirects on the registry's host are followed with the token; a redirect to another host (a CDN's
  signed URL) is followed *without* it. The final URL is probed with ``Range: bytes=0-0``: 206 means parts
  can be fetched in parallel there, 200 means the server streams whole blobs only.
* Plain http is refused for every URL (redirect targets and token realms included) whose host is not
  marked insecure.

httpx errors never leave this module: they become :class:`UpstreamError` (retryable) or one of the final
errors (:class:`ModelNotFoundError`, :class:`UpstreamRejectedError`, :class:`UpstreamAuthError`).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import httpx

from modelhub_puller.domain import manifest as mf
from modelhub_puller.domain.names import ModelName
from modelhub_puller.errors import (
    HostNotAllowedError,
    InvalidManifestError,
    ModelNotFoundError,
    PullerError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamRejectedError,
)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_HOPS = 10
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_MAX_ERROR_TEXT = 500


class LocationExpiredError(UpstreamError):
    """A signed blob URL stopped working (expired or revoked); locate the blob again."""

    code = "upstream_location_expired"


@dataclass
class BlobLocation:
    """Where a blob's bytes are fetched from after the redirects."""

    url: str
    send_auth: bool
    size: int
    ranged: bool


@dataclass
class RegistrySession:
    """One model's conversation with its registry: the base URL and the bearer token once obtained."""

    name: ModelName
    base_url: str
    registry_host: str
    token: str | None = None
    token_fetches: int = 0
    extra_headers: dict[str, str] = field(default_factory=dict)


class RegistryClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        allowed_hosts: Collection[str],
        insecure_hosts: Collection[str],
        mirrors: Mapping[str, str],
        max_manifest_bytes: int,
    ) -> None:
        self._http = http
        self._allowed = frozenset(h.lower() for h in allowed_hosts)
        self._insecure = frozenset(h.lower() for h in insecure_hosts)
        self._mirrors = dict(mirrors)
        self._max_manifest = max_manifest_bytes

    # ---- policy

    def check_allowed(self, name: ModelName) -> None:
        if name.host not in self._allowed:
            allowed = ", ".join(sorted(self._allowed)) or "none"
            raise HostNotAllowedError(f"pulling from {name.host} is not allowed (allowed hosts: {allowed})")
        if name.scheme == "http" and name.host not in self._insecure and name.host not in self._mirrors:
            raise HostNotAllowedError(f"{name.host} is not marked insecure: plain http is not allowed for it")

    def session(self, name: ModelName) -> RegistrySession:
        self.check_allowed(name)
        mirror = self._mirrors.get(name.host)
        if mirror is not None:
            base = mirror
        else:
            scheme = "http" if name.scheme == "http" or name.host in self._insecure else "https"
            base = f"{scheme}://{name.host}"
        host = urlsplit(base).netloc.lower()
        return RegistrySession(name=name, base_url=base, registry_host=host)

    def _check_url(self, url: str, session: RegistrySession) -> None:
        parts = urlsplit(url)
        host = parts.netloc.lower()
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamError(f"the registry sent an unusable URL {url[:200]!r}")
        trusted = host == session.registry_host
        if (
            parts.scheme == "http"
            and host not in self._insecure
            and not (trusted and session.base_url.startswith("http://"))
        ):
            raise UpstreamError(f"refusing plain http to {host}: it is not marked insecure")

    # ---- requests

    async def _send(
        self, session: RegistrySession, url: str, headers: dict[str, str], *, auth: bool, stream: bool
    ) -> httpx.Response:
        """One request with the token (on the registry's host only) and the 401 → token → retry dance."""
        self._check_url(url, session)
        same_host = urlsplit(url).netloc.lower() == session.registry_host
        response = await self._request(session, url, headers, auth=auth and same_host, stream=stream)
        if response.status_code == 401 and auth and same_host and session.token_fetches < 3:
            challenge = response.headers.get("www-authenticate", "")
            await response.aclose()
            await self._fetch_token(session, challenge)
            response = await self._request(session, url, headers, auth=True, stream=stream)
        return response

    async def _request(
        self, session: RegistrySession, url: str, headers: dict[str, str], *, auth: bool, stream: bool
    ) -> httpx.Response:
        request_headers = dict(headers)
        if auth and session.token:
            request_headers["Authorization"] = f"Bearer {session.token}"
        request = self._http.build_request("GET", url, headers=request_headers)
        try:
            return await self._http.send(request, stream=stream)
        except httpx.TimeoutException as exc:
            raise UpstreamError(f"{urlsplit(url).netloc} timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"cannot reach {urlsplit(url).netloc}: {type(exc).__name__}: {exc}") from exc

    async def _fetch_token(self, session: RegistrySession, challenge: str) -> None:
        session.token_fetches += 1
        scheme, _, params_text = challenge.partition(" ")
        if scheme.lower() != "bearer":
            raise UpstreamAuthError(
                f"{session.name.host} asks for {scheme or 'unknown'} authentication; only bearer tokens are supported"
            )
        params = dict(_CHALLENGE_PARAM.findall(params_text))
        realm = params.get("realm", "")
        realm_parts = urlsplit(realm)
        realm_host = realm_parts.netloc.lower()
        if not realm_parts.hostname or (realm_host != session.registry_host and realm_host not in self._allowed):
            raise UpstreamAuthError(
                f"{session.name.host} sent a token realm on a host that is not allowed: {realm_host!r}"
            )
        self._check_url(realm, session)
        query = {k: params[k] for k in ("service", "scope") if k in params}
        try:
            response = await self._http.get(realm, params=query)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"cannot get a token from {realm_host}: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise UpstreamAuthError(f"{realm_host} refused a token (HTTP {response.status_code})")
        try:
            body = response.json()
        except ValueError as exc:
            raise UpstreamAuthError(f"{realm_host} answered the token request with something that is not JSON") from exc
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise UpstreamAuthError(f"{realm_host} answered the token request without a token")
        session.token = token

    async def _failure(self, response: httpx.Response, what: str) -> PullerError:
        status = response.status_code
        try:
            text = (await response.aread()).decode("utf-8", "replace").strip()[:_MAX_ERROR_TEXT]
        except httpx.HTTPError:
            text = ""
        finally:
            await response.aclose()
        if status == 404:
            return ModelNotFoundError(f"{what}: not found (file does not exist)")
        if status in (401, 403):
            return UpstreamAuthError(f"{what}: the registry refused access (HTTP {status})")
        if status == 400 or status == 422:
            # hf.co explains refusals in a text body: "not a valid quantization scheme", "Repository is not GGUF"
            return UpstreamRejectedError(f"{what}: the registry refused: {_error_text(text) or 'bad request'}")
        if status == 429 or status >= 500:
            return UpstreamError(f"{what}: the registry answered HTTP {status}")
        return UpstreamError(f"{what}: unexpected HTTP {status}")

    # ---- manifests and small blobs

    async def manifest(self, session: RegistrySession) -> mf.Manifest:
        name = session.name
        url = f"{session.base_url}/v2/{name.repository}/manifests/{name.tag}"
        response = await self._send(session, url, {"Accept": mf.ACCEPT_MANIFEST}, auth=True, stream=True)
        if response.status_code != 200:
            raise await self._failure(response, f"manifest of {name.full}")
        raw = await self._read_capped(response, self._max_manifest, f"manifest of {name.full}")
        manifest = mf.parse_manifest(raw)
        advertised = response.headers.get("docker-content-digest")
        if advertised and advertised.startswith("sha256:") and advertised != manifest.digest:
            raise InvalidManifestError(f"the manifest of {name.full} does not match its advertised digest")
        return manifest

    async def _read_capped(self, response: httpx.Response, limit: int, what: str) -> bytes:
        data = bytearray()
        try:
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > limit:
                    raise InvalidManifestError(f"{what} is larger than {limit} bytes")
        except httpx.HTTPError as exc:
            raise UpstreamError(f"{what}: the download broke off ({type(exc).__name__})") from exc
        finally:
            await response.aclose()
        return bytes(data)

    @asynccontextmanager
    async def open_blob(
        self, session: RegistrySession, digest: str, *, probe: bool
    ) -> AsyncIterator[tuple[httpx.Response, BlobLocation]]:
        """Follows the blob's redirects; yields the open final response and where it came from.

        With ``probe`` the request asks for the first byte only, so the answer says whether ranges work.
        """
        url = f"{session.base_url}/v2/{session.name.repository}/blobs/{mf.check_digest(digest)}"
        auth = True
        headers = {"Range": "bytes=0-0"} if probe else {}
        headers["Accept-Encoding"] = "identity"
        for _ in range(_MAX_HOPS):
            response = await self._send(session, url, headers, auth=auth, stream=True)
            if response.status_code in _REDIRECTS:
                location = response.headers.get("location")
                await response.aclose()
                if not location:
                    raise UpstreamError("the registry redirected without a Location")
                target = urljoin(url, location)
                if urlsplit(target).netloc.lower() != urlsplit(url).netloc.lower():
                    auth = False  # never hand the registry's token to another host
                url = target
                continue
            if response.status_code not in (200, 206):
                raise await self._failure(response, f"blob {digest[:19]} of {session.name.full}")
            try:
                yield (
                    response,
                    BlobLocation(
                        url=url, send_auth=auth, size=_total_size(response), ranged=response.status_code == 206
                    ),
                )
            finally:
                await response.aclose()
            return
        raise UpstreamError(f"more than {_MAX_HOPS} redirects for blob {digest[:19]}")

    async def locate(self, session: RegistrySession, layer: mf.Layer) -> BlobLocation:
        async with self.open_blob(session, layer.digest, probe=True) as (_, location):
            pass
        if location.size >= 0 and location.size != layer.size:
            raise InvalidManifestError(
                f"blob {layer.digest[:19]} is {location.size} bytes at the registry but the manifest says {layer.size}"
            )
        return location

    async def read_small(self, session: RegistrySession, layer: mf.Layer) -> bytes:
        async with self.open_blob(session, layer.digest, probe=False) as (response, _):
            data = await self._read_capped(response, layer.size, f"blob {layer.digest[:19]}")
        return data

    # ---- ranged parts

    @asynccontextmanager
    async def open_range(
        self, session: RegistrySession, location: BlobLocation, start: int, end: int
    ) -> AsyncIterator[httpx.Response]:
        """An open 206 response for bytes ``start``..``end`` (inclusive) on the located URL."""
        # identity: the bytes must be the blob's own (they are hashed), never a compressed rendition of it.
        headers = {"Range": f"bytes={start}-{end}", "Accept-Encoding": "identity"}
        response = await self._send(session, location.url, headers, auth=location.send_auth, stream=True)
        try:
            if response.status_code in (401, 403) or response.status_code in _REDIRECTS:
                raise LocationExpiredError(f"the blob URL answered HTTP {response.status_code}")
            if response.status_code != 206:
                raise await self._failure(response, f"bytes {start}-{end}")
            match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
            if match is None or int(match.group(1)) != start or int(match.group(2)) != end:
                raise UpstreamError(f"asked for bytes {start}-{end}, got {response.headers.get('content-range')!r}")
            yield response
        finally:
            await response.aclose()

    @asynccontextmanager
    async def open_whole(self, session: RegistrySession, location: BlobLocation) -> AsyncIterator[httpx.Response]:
        headers = {"Accept-Encoding": "identity"}
        response = await self._send(session, location.url, headers, auth=location.send_auth, stream=True)
        try:
            if response.status_code in (401, 403) or response.status_code in _REDIRECTS:
                raise LocationExpiredError(f"the blob URL answered HTTP {response.status_code}")
            if response.status_code != 200:
                raise await self._failure(response, "blob")
            yield response
        finally:
            await response.aclose()


def _total_size(response: httpx.Response) -> int:
    if response.status_code == 206:
        match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
        if match and match.group(3) != "*":
            return int(match.group(3))
        return -1
    length = response.headers.get("content-length")
    return int(length) if length and length.isdigit() else -1


def _error_text(text: str) -> str:
    """The message of a registry error body: OCI JSON ``{"errors": [{"message"}]}`` or plain text."""
    if text.startswith("{"):
        try:
            body = json.loads(text)
        except ValueError:
            return text
        errors = body.get("errors") if isinstance(body, dict) else None
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            return str(errors[0].get("message") or errors[0].get("code") or text)
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            return str(body["error"])
    return text
