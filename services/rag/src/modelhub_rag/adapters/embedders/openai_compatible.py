"""Embeddings from an OpenAI-compatible server (``POST /v1/embeddings``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from modelhub_rag.adapters.embedders._http import post_json, to_vectors
from modelhub_rag.adapters.embedders.wordpiece import WordPieceTokenizer
from modelhub_rag.domain.embedding import Vectors
from modelhub_rag.errors import EmbedderError


class OpenAICompatibleEmbedder:
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
        self._client = client
        base = base_url.rstrip("/")
        self._url = base + ("/embeddings" if base.endswith("/v1") else "/v1/embeddings")
        self._model = model
        self._dimensions = dimensions
        self._tokenizer = tokenizer
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._max_input_tokens = max_input_tokens

    @property
    def name(self) -> str:
        return f"openai:{self._model}"

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def max_input_tokens(self) -> int:
        return self._max_input_tokens

    @property
    def tokenizer(self) -> WordPieceTokenizer:
        return self._tokenizer

    async def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self._dimensions), dtype=np.float32)
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
