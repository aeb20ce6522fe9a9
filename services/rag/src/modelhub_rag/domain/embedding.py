"""The one interface every embedder implements (local ONNX, Ollama, OpenAI-compatible)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from modelhub_rag.domain.chunking import TokenSpans

Vectors = npt.NDArray[np.float32]


class Embedder(Protocol):
    @property
    def name(self) -> str:
        """Identifies the model and its vector space, e.g. ``onnx:all-MiniLM-L6-v2-int8``; stored per collection."""
        ...

    @property
    def dimensions(self) -> int: ...

    @property
    def max_input_tokens(self) -> int:
        """Tokens the model reads per text, special tokens included; chunks must fit."""
        ...

    @property
    def tokenizer(self) -> TokenSpans:
        """The tokenizer chunk sizes are counted with."""
        ...

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """One L2-normalised row per text. Must not block the event loop."""
        ...

    async def aclose(self) -> None: ...
