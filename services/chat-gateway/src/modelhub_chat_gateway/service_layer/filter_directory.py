"""A model file's filters (``filterIds`` then ``defaultFilterIds``), loaded from the registry with the service
token, cached for ``ttl`` seconds and dropped at once when the registry announces a change to a filter.

Filters are configured by admins and apply to every caller alike, so the cache is keyed by the ids only.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from modelhub_chat_gateway.adapters.registry_client import RegistryClient
from modelhub_chat_gateway.domain.chat_types import BackendWarning, PromptMessage
from modelhub_chat_gateway.errors import RegistryUnavailableError
from modelhub_chat_gateway.service_layer.filters import FilterSpec, Stage


@dataclass(frozen=True)
class ModelFilters:
    specs: tuple[FilterSpec, ...] = ()
    #: One per filter id that could not be honoured (unknown, disabled or unreadable).
    warnings: tuple[BackendWarning, ...] = field(default=())

    def any_for(self, stage: Stage) -> bool:
        return any(s.applies(stage) for s in self.specs)

    def redactions(self) -> tuple[FilterSpec, ...]:
        """The inlet redactions, which also apply to the earlier user messages a model is shown."""
        return tuple(s for s in self.specs if s.kind == "redact" and s.applies("inlet"))


class FilterDirectory:
    def __init__(self, registry: RegistryClient, *, ttl: float) -> None:
        self._registry = registry
        self._ttl = ttl
        self._cache: dict[tuple[str, ...], tuple[float, ModelFilters]] = {}

    def invalidate(self) -> None:
        self._cache.clear()

    async def for_ids(self, ids: Sequence[str]) -> ModelFilters:
        """Raises :class:`RegistryUnavailableError` when the filters cannot be read: a model whose filters are
        unknown must not answer without them."""
        key = tuple(ids)
        if not key:
            return ModelFilters()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        bodies = await self._registry.filter_configs(key)
        specs: dict[str, FilterSpec] = {}
        warnings: list[BackendWarning] = []
        for body in bodies:
            try:
                spec = FilterSpec.from_registry(body)
            except ValueError as exc:
                raise RegistryUnavailableError(f"the registry sent a filter the gateway cannot run: {exc}") from exc
            specs[spec.id] = spec
        for filter_id in key:
            if filter_id not in specs:
                warnings.append(
                    BackendWarning(
                        "filter_unavailable",
                        f"filter '{filter_id}' does not exist or is disabled, so it was not applied",
                    )
                )
        found = ModelFilters(tuple(specs[i] for i in key if i in specs), tuple(warnings))
        if self._ttl > 0:
            self._cache[key] = (time.monotonic() + self._ttl, found)
        return found


def redacted(messages: Sequence[PromptMessage], filters: ModelFilters) -> list[PromptMessage]:
    """Earlier user messages with the inlet redactions applied again (they are stored as the user typed them,
    and each model of a turn may have other filters). Only redactions: they are pure and cheap, and a block
    or a webhook on every earlier message would refuse or re-ask for ever."""
    redactions = filters.redactions()
    if not redactions:
        return list(messages)
    result: list[PromptMessage] = []
    for message in messages:
        content = message.content
        if message.role == "user":
            for spec in redactions:
                content = _redact(spec, content)
        result.append(replace(message, content=content))
    return result


def _redact(spec: FilterSpec, text: str) -> str:
    replacement = str(spec.config.get("replacement", "[redacted]"))
    for pattern in spec.patterns:
        text = pattern.sub(lambda _match: replacement, text)  # as written, even with "\1" in it
    return text
