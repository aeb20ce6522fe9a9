"""Reciprocal rank fusion: one ranking out of several, without having to compare their scores.

A candidate's score is the sum over rankings of ``1 / (k + rank)`` (rank 1 is the best). Items found by both
the vector and the text ranker rise to the top; an item only one of them finds (an exact identifier that the
embedding blurs) still ranks by its position there.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

T = TypeVar("T", bound=Hashable)


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[T]], *, k: int = 60, limit: int | None = None
) -> list[tuple[T, float]]:
    if k < 1:
        raise ValueError("k must be at least 1")
    scores: dict[T, float] = {}
    first_seen: dict[T, int] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
            first_seen.setdefault(item, len(first_seen))
    # Ties keep the order of first appearance, so results are deterministic.
    ordered = sorted(scores.items(), key=lambda pair: (-pair[1], first_seen[pair[0]]))
    return ordered[:limit] if limit is not None else ordered
