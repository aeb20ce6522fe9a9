"""An embedder that delegates to a real one, for test doubles that watch or hold up its work."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from modelhub_rag.domain.embedding import Embedder, Vectors


class WrappedEmbedder:
    """Everything is the inner embedder's; subclasses override ``embed`` (and ``aclose``) to add behaviour."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dimensions(self) -> int:
        return self.inner.dimensions

    @property
    def max_input_tokens(self) -> int:
        return self.inner.max_input_tokens

    @property
    def tokenizer(self) -> Any:
        return self.inner.tokenizer

    async def embed(self, texts: Sequence[str]) -> Vectors:
        return await self.inner.embed(texts)

    async def aclose(self) -> None:
        await self.inner.aclose()
