"""How a model file's settings combine with those it is built on.

Precedence, highest first: request overrides > the model file > each model file it is built on, nearest
first > the base model's defaults. A key set at a higher level replaces the whole value below it (lists
such as ``stop`` are not merged). The system prompt is the key ``system`` and follows the same rule: the
nearest one wins, nothing is concatenated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

LinkKind = Literal["model", "base"]


@dataclass(frozen=True)
class ChainLink:
    kind: LinkKind
    id: str
    params: dict[str, Any]
    enabled: bool = True
    available: bool = True


@dataclass(frozen=True)
class EffectiveParam:
    value: Any
    source: str
    source_kind: str


def merge_params(chain: list[ChainLink], overrides: dict[str, Any] | None = None) -> dict[str, EffectiveParam]:
    """``chain`` starts at the model file asked for and ends at the base model."""
    merged: dict[str, EffectiveParam] = {}
    for link in reversed(chain):
        for key, value in link.params.items():
            if value is not None:
                merged[key] = EffectiveParam(value, link.id, link.kind)
    for key, value in (overrides or {}).items():
        if value is not None:
            merged[key] = EffectiveParam(value, "request", "request")
    return merged
