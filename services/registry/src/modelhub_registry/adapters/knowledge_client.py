"""Asks the RAG service which knowledge collections exist, for the warnings of an import."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx

from modelhub_registry.errors import UpstreamError


class KnowledgeUnavailableError(UpstreamError):
    """The RAG service could not say whether a collection exists (down, slow, or an unexpected answer)."""

    code = "knowledge_unavailable"


@dataclass(frozen=True)
class KnowledgeLookup:
    missing: set[str] = field(default_factory=set)
    """Ids the RAG service does not know."""
    unreadable: set[str] = field(default_factory=set)
    """Ids that exist but the caller may not read."""


class KnowledgeClient:
    """``GET {rag_url}/api/v1/knowledge/{id}`` with the caller's token, a few at a time."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, *, timeout: float, concurrency: int) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._timeout = timeout
        self._concurrency = concurrency

    async def lookup(self, knowledge_ids: Iterable[str], token: str) -> KnowledgeLookup:
        """Raises :class:`KnowledgeUnavailableError` if any answer is missing; the whole lookup is bounded by
        the timeout, however many ids there are."""
        ids = sorted(set(knowledge_ids))
        result = KnowledgeLookup()
        if not ids:
            return result
        gate = asyncio.Semaphore(self._concurrency)
        headers = {"Authorization": f"Bearer {token}"}

        async def one(knowledge_id: str) -> None:
            async with gate:
                response = await self._http.get(
                    f"{self._base}/api/v1/knowledge/{quote(knowledge_id, safe='')}", headers=headers
                )
            if response.status_code == 404:
                result.missing.add(knowledge_id)
            elif response.status_code == 403:
                result.unreadable.add(knowledge_id)
            elif response.status_code != 200:
                raise KnowledgeUnavailableError(f"the knowledge service answered HTTP {response.status_code}")

        try:
            async with asyncio.timeout(self._timeout):
                outcomes = await asyncio.gather(*(one(k) for k in ids), return_exceptions=True)
        except TimeoutError as exc:
            raise KnowledgeUnavailableError(f"the knowledge service did not answer within {self._timeout:g} s") from exc
        for outcome in outcomes:
            if isinstance(outcome, KnowledgeUnavailableError):
                raise outcome
            if isinstance(outcome, httpx.HTTPError):
                raise KnowledgeUnavailableError(
                    f"cannot reach the knowledge service: {type(outcome).__name__}"
                ) from outcome
            if isinstance(outcome, BaseException):
                raise outcome
        return result
