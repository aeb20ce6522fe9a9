"""Embeddings from an OpenAI-compatible server (``POST /v1/embeddings``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from modelhub_rag.adapters.embedders._http import RemoteEmbedder, post_json, to_vectors
from modelhub_rag.adapters.embedders.wordpiece import WordPieceTokenizer
from modelhub_rag.domain.embedding import Vectors
from modelhub_rag.errors import EmbedderError


class OpenAICompatibleEmbedder(RemoteEmbedder):
    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        model: str,
        dimensions: int,
        tokenizer: WordPieceTokenizer,
        api_key: str | None = None,
        max_input_tokens: int = 8191,
    ) -> None:
        base = base_url.rstrip("/")
        super().__init__(
            client,
            url=base + ("/embeddings" if base.endswith("/v1") else "/v1/embeddings"),
            model=model,
            dimensions=dimensions,
            tokenizer=tokenizer,
            max_input_tokens=max_input_tokens,
        )
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    @property
    def name(self) -> str:
        return f"openai:{self._model}"

    async def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return self._empty()
        body = {"model": self._model, "input": list(texts), "encoding_format": "float"}
        answer = await post_json(
            self._client, self._url, body, what="the OpenAI-compatible embedder", headers=self._headers
        )
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
            raise EmbedderError("the OpenAI-compatible embedder's answer has no 'data' list")
        ordered: list[Any] = [d.get("embedding") for d in sorted(data, key=lambda d: int(d.get("index", 0)))]
        return to_vectors(
            ordered, expected=len(texts), dimensions=self._dimensions, what="the OpenAI-compatible embedder"
        )

    async def aclose(self) -> None:
        """The HTTP client belongs to bootstrap, which closes it."""
