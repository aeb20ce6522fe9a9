"""Embeddings from an Ollama server (``POST /api/embed``)."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import numpy as np

from modelhub_rag.adapters.embedders._http import post_json, to_vectors
from modelhub_rag.adapters.embedders.wordpiece import WordPieceTokenizer
from modelhub_rag.domain.embedding import Vectors
from modelhub_rag.errors import EmbedderError


class OllamaEmbedder:
    """``max_input_tokens`` bounds chunk sizes; Ollama truncates longer inputs itself (``truncate: true``)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        model: str,
        dimensions: int,
        tokenizer: WordPieceTokenizer,
        max_input_tokens: int = 512,
    ) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + "/api/embed"
        self._model = model
        self._dimensions = dimensions
        self._tokenizer = tokenizer
        self._max_input_tokens = max_input_tokens

    @property
    def name(self) -> str:
        return f"ollama:{self._model}"

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
        body = {"model": self._model, "input": list(texts), "truncate": True}
        answer = await post_json(self._client, self._url, body, what="the Ollama embedder")
        rows = answer.get("embeddings") if isinstance(answer, dict) else None
        if not isinstance(rows, list):
            raise EmbedderError("the Ollama embedder's answer has no 'embeddings' list")
        return to_vectors(rows, expected=len(texts), dimensions=self._dimensions, what="the Ollama embedder")

    async def aclose(self) -> None:
        """The HTTP client belongs to bootstrap, which closes it."""
