"""What the HTTP embedders share: their settings, error translation and vector checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from modelhub_rag.adapters.embedders.wordpiece import WordPieceTokenizer
from modelhub_rag.domain.embedding import Vectors
from modelhub_rag.errors import EmbedderError, EmbedderUnavailableError


async def post_json(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], *, what: str, headers: dict[str, str] | None = None
) -> Any:
    try:
        response = await client.post(url, json=body, headers=headers)
    except httpx.TimeoutException as exc:
        raise EmbedderUnavailableError(f"{what} at {url} timed out") from exc
    except httpx.HTTPError as exc:
        raise EmbedderUnavailableError(f"{what} at {url} is unreachable: {type(exc).__name__}") from exc
    if response.status_code == 429 or response.status_code >= 500:
        raise EmbedderUnavailableError(f"{what} answered HTTP {response.status_code}: {response.text[:200]}")
    if response.is_error:
        raise EmbedderError(f"{what} refused the request (HTTP {response.status_code}): {response.text[:300]}")
    try:
        return response.json()
    except ValueError as exc:
        raise EmbedderError(f"{what} answered with something that is not JSON") from exc


def to_vectors(rows: Sequence[Any], *, expected: int, dimensions: int, what: str) -> Vectors:
    if len(rows) != expected:
        raise EmbedderError(f"{what} returned {len(rows)} vectors for {expected} texts")
    try:
        matrix = np.asarray(rows, dtype=np.float32)
    except (ValueError, TypeError) as exc:
        raise EmbedderError(f"{what} returned vectors that are not lists of numbers") from exc
    if matrix.ndim != 2 or matrix.shape[1] != dimensions:
        got = matrix.shape[1] if matrix.ndim == 2 else "ragged"
        raise EmbedderError(f"{what} returned {got}-dimensional vectors; the setting says {dimensions}")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    vectors: Vectors = (matrix / np.clip(norms, 1e-12, None)).astype(np.float32)
    return vectors


class RemoteEmbedder:
    """The parts of an embedder served over HTTP that do not depend on the server's API."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        url: str,
        model: str,
        dimensions: int,
        tokenizer: WordPieceTokenizer,
        max_input_tokens: int,
    ) -> None:
        self._client = client
        self._url = url
        self._model = model
        self._dimensions = dimensions
        self._tokenizer = tokenizer
        self._max_input_tokens = max_input_tokens

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def max_input_tokens(self) -> int:
        return self._max_input_tokens

    @property
    def tokenizer(self) -> WordPieceTokenizer:
        return self._tokenizer

    def _empty(self) -> Vectors:
        return np.zeros((0, self._dimensions), dtype=np.float32)
