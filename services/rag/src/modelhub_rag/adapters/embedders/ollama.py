"""Embeddings from an Ollama server (``POST /api/embed``)."""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from modelhub_rag.adapters.embedders._http import RemoteEmbedder, post_json, to_vectors
from modelhub_rag.adapters.embedders.wordpiece import WordPieceTokenizer
from modelhub_rag.domain.embedding import Vectors
from modelhub_rag.errors import EmbedderError


class OllamaEmbedder(RemoteEmbedder):
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
        super().__init__(
            client,
            url=base_url.rstrip("/") + "/api/embed",
            model=model,
            dimensions=dimensions,
            tokenizer=tokenizer,
            max_input_tokens=max_input_tokens,
        )

    @property
    def name(self) -> str:
        return f"ollama:{self._model}"

    async def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return self._empty()
        body = {"model": self._model, "input": list(texts), "truncate": True}
        answer = await post_json(self._client, self._url, body, what="the Ollama embedder")
        rows = answer.get("embeddings") if isinstance(answer, dict) else None
        if not isinstance(rows, list):
            raise EmbedderError("the Ollama embedder's answer has no 'embeddings' list")
        return to_vectors(rows, expected=len(texts), dimensions=self._dimensions, what="the Ollama embedder")

    async def aclose(self) -> None:
        """The HTTP client belongs to bootstrap, which closes it."""
