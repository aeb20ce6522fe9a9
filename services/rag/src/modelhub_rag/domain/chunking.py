"""Splitting extracted text into chunks that fit the embedder, with overlap, cut where the text pauses.

Sizes are counted in the embedder's own tokens (the tokenizer gives each token's character span), so a chunk
never exceeds what the model reads. Within the last half of the window, a cut goes at the best boundary
found: a blank line, then a line end or the end of a sentence, then a space (never inside a word). The next
chunk starts ``overlap_tokens`` before the cut, moved forward to the start of a word. Chunks never cross a
page, so each has a single page number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from modelhub_rag.domain.extraction import ExtractedText

# Long texts are tokenized a block at a time (cut at a line end) to bound memory.
_BLOCK_CHARS = 200_000
_SENTENCE_END = ".!?;:。！？"


@dataclass(frozen=True)
class ChunkingPolicy:
    chunk_tokens: int
    overlap_tokens: int

    def __post_init__(self) -> None:
        if self.chunk_tokens < 1:
            raise ValueError("chunk_tokens must be at least 1")
        if not 0 <= self.overlap_tokens < self.chunk_tokens:
            raise ValueError("overlap_tokens must be at least 0 and smaller than chunk_tokens")

    def signature(self, tokenizer: str) -> str:
        """Identifies how chunks were cut; files cut another way are not reused as they are."""
        return f"{tokenizer}:{self.chunk_tokens}/{self.overlap_tokens}"


class TokenSpans(Protocol):
    """The embedder's tokenizer: the character span of each token of ``text`` (no special tokens)."""

    @property
    def tokenizer_name(self) -> str: ...

    def token_spans(self, text: str) -> Sequence[tuple[int, int]]: ...


@dataclass(frozen=True)
class Chunk:
    ordinal: int
    text: str
    page: int | None
    start_offset: int
    end_offset: int
    token_count: int


def split(document: ExtractedText, policy: ChunkingPolicy, tokenizer: TokenSpans) -> list[Chunk]:
    segments = (
        [(span.start, span.end, span.number) for span in document.pages]
        if document.pages
        else [(0, len(document.text), None)]
    )
    chunks: list[Chunk] = []
    for start, end, page in segments:
        for block_start, block_end in _blocks(document.text, start, end):
            for chunk_start, chunk_end, tokens in _split_block(document.text[block_start:block_end], policy, tokenizer):
                text = document.text[block_start + chunk_start : block_start + chunk_end]
                chunks.append(
                    Chunk(
                        ordinal=len(chunks),
                        text=text,
                        page=page,
                        start_offset=block_start + chunk_start,
                        end_offset=block_start + chunk_end,
                        token_count=tokens,
                    )
                )
    return chunks


def _blocks(text: str, start: int, end: int) -> list[tuple[int, int]]:
    blocks = []
    while end - start > _BLOCK_CHARS:
        cut = text.rfind("\n", start + _BLOCK_CHARS // 2, start + _BLOCK_CHARS)
        if cut <= start:
            cut = text.rfind(" ", start + _BLOCK_CHARS // 2, start + _BLOCK_CHARS)
        if cut <= start:
            cut = start + _BLOCK_CHARS
        blocks.append((start, cut))
        start = cut
    blocks.append((start, end))
    return blocks


def _boundary(text: str, spans: Sequence[tuple[int, int]], i: int) -> int:
    """How good it is to cut just before token ``i``: 3 paragraph, 2 line or sentence end, 1 space, 0 mid-word."""
    gap = text[spans[i - 1][1] : spans[i][0]]
    if "\n\n" in gap:
        return 3
    if "\n" in gap:
        return 2
    if gap and gap.isspace():
        previous = text[spans[i - 1][1] - 1] if spans[i - 1][1] > 0 else ""
        return 2 if previous in _SENTENCE_END else 1
    return 0


def _split_block(text: str, policy: ChunkingPolicy, tokenizer: TokenSpans) -> list[tuple[int, int, int]]:
    spans = tokenizer.token_spans(text)
    n = len(spans)
    pieces: list[tuple[int, int, int]] = []
    start = 0
    while start < n:
        end = min(start + policy.chunk_tokens, n)
        if end < n:
            best, best_score = end, _boundary(text, spans, end)
            for i in range(end - 1, start + max(1, policy.chunk_tokens // 2) - 1, -1):
                if best_score >= 3:
                    break
                score = _boundary(text, spans, i)
                if score > best_score:
                    best, best_score = i, score
            end = best
        pieces.append((spans[start][0], spans[end - 1][1], end - start))
        if end >= n:
            break
        following = max(end - policy.overlap_tokens, start + 1)
        # Start on a word, not on a word piece in its middle.
        while following < end and _boundary(text, spans, following) == 0:
            following += 1
        start = following
    return pieces
