"""Asks the RAG service for the chunks of a model's knowledge that match the user's message."""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from modelhub_chat_gateway.domain.chat_types import Citation
from modelhub_chat_gateway.errors import RetrievalError


class RagClient:
    """``POST {rag_url}/api/v1/retrieve`` with the caller's token (the RAG service checks knowledge access)."""

    def __init__(self, http: httpx.AsyncClient, base_url: str) -> None:
        self._http = http
        self._base = base_url.rstrip("/")

    async def retrieve(self, knowledge_ids: Sequence[str], query: str, k: int, token: str) -> list[Citation]:
        try:
            response = await self._http.post(
                f"{self._base}/api/v1/retrieve",
                json={"knowledge_ids": list(knowledge_ids), "query": query, "k": k},
                headers={"Authorization": f"Bearer {token}"},
            )
        except httpx.HTTPError as exc:
            raise RetrievalError(f"cannot reach the knowledge service: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise RetrievalError(f"the knowledge service answered HTTP {response.status_code}: {_message(response)}")
        try:
            results = response.json().get("results", [])
            return [
                Citation(
                    knowledge_id=str(r.get("knowledge_id", "")),
                    file_id=str(r.get("file_id", "")),
                    file_name=str(r.get("file_name", "")),
                    text=str(r.get("text", "")),
                    score=float(r.get("score") or 0.0),
                    page=int(r.get("page") or 0),
                    start_offset=int(r.get("start_offset") or 0),
                    end_offset=int(r.get("end_offset") or 0),
                )
                for r in results
                if isinstance(r, dict)
            ]
        except (ValueError, AttributeError, TypeError) as exc:
            raise RetrievalError("the knowledge service answered an unexpected shape") from exc


def _message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", {})
        return str(error.get("message") or response.text[:200])
    except (ValueError, AttributeError):
        return response.text[:200]
