"""Resolves model ids to runnable models through the registry, for one caller, with a cache; lists the
models a caller can use from the in-memory selector catalog.

The cache is keyed by model id and caller (access differs per caller), lives ``model_cache_seconds``, and
is invalidated by the registry's model events: an event about a model drops every entry whose chain
contains it, so a change to a base or to an intermediate model file is seen at once. The selector needs no
registry call at all: :class:`~modelhub_chat_gateway.service_layer.selector_catalog.SelectorCatalog` holds
every model file and base model and is kept current by the same events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from modelhub_chat_gateway.adapters.registry_client import RegistryClient
from modelhub_chat_gateway.domain.model import ModelListing, ModelLocation, ResolvedModel
from modelhub_chat_gateway.errors import (
    ModelAccessDeniedError,
    ModelNotFoundError,
    ModelUnusableError,
    RegistryUnavailableError,
)
from modelhub_chat_gateway.service_layer.selector_catalog import SelectorCatalog
from modelhub_common.auth import Principal

logger = logging.getLogger(__name__)

_CONNECTIONS_TTL = 30.0


@dataclass(frozen=True)
class Caller:
    principal: Principal
    token: str

    @property
    def cache_key(self) -> tuple[str, str, frozenset[str]]:
        return (self.principal.subject, self.principal.role, self.principal.groups)


def _meta_ids(meta: dict[str, Any], *keys: str) -> tuple[str, ...]:
    """A list of ids from a model file's meta, under Open WebUI's key or ours; each id once, in order."""
    for key in keys:
        value = meta.get(key)
        if isinstance(value, list):
            return tuple(dict.fromkeys(str(v).strip() for v in value if isinstance(v, str) and v.strip()))
    return ()


@dataclass
class _Entry:
    model: ResolvedModel
    expires: float


class ModelCatalog:
    def __init__(
        self, registry: RegistryClient, *, ttl: float, selector: SelectorCatalog, selector_wait_seconds: float
    ) -> None:
        self._registry = registry
        self._ttl = ttl
        self._selector = selector
        self._selector_wait = selector_wait_seconds
        self._entries: dict[tuple[str, tuple[str, str, frozenset[str]]], _Entry] = {}
        # connection id -> (expiry on the monotonic clock, (url, api key) or None when it does not exist)
        self._connections: dict[str, tuple[float, tuple[str, str | None] | None]] = {}
        self._connections_lock = asyncio.Lock()

    # ---- invalidation

    def invalidate(self, model_ids: Iterable[str]) -> int:
        ids = set(model_ids)
        stale = [key for key, entry in self._entries.items() if ids.intersection(entry.model.chain)]
        for key in stale:
            del self._entries[key]
        return len(stale)

    def invalidate_connections(self) -> None:
        self._connections.clear()

    def clear(self) -> None:
        self._entries.clear()
        self._connections.clear()

    # ---- resolution

    def cached(self, model_id: str, caller: Caller) -> ResolvedModel | None:
        """The model if it was resolved for this caller a moment ago, without waiting for anything."""
        entry = self._entries.get((model_id, caller.cache_key))
        return entry.model if entry is not None and entry.expires > time.monotonic() else None

    async def resolve(self, model_id: str, caller: Caller) -> ResolvedModel:
        key = (model_id, caller.cache_key)
        entry = self._entries.get(key)
        now = time.monotonic()
        if entry is not None and entry.expires > now:
            return entry.model
        model = await self._resolve(model_id, caller)
        if self._ttl > 0:
            self._entries[key] = _Entry(model, now + self._ttl)
        return model

    async def _resolve(self, model_id: str, caller: Caller) -> ResolvedModel:
        model_file = await self._registry.model(model_id, caller.token)
        if model_file is None:
            return await self._resolve_base_only(model_id, caller)
        effective = await self._registry.effective(model_id, caller.token)
        chain_links = [link for link in effective.get("chain", []) if isinstance(link, dict)]
        chain = tuple(str(link.get("id")) for link in chain_links)
        for link in chain_links:
            if link.get("kind") == "model" and link.get("enabled") is False:
                who = "" if link.get("id") == model_id else f" (it is built on '{link.get('id')}')"
                raise ModelUnusableError(f"model '{link.get('id')}' is disabled{who}")
        base_link = chain_links[-1] if chain_links and chain_links[-1].get("kind") == "base" else None
        if base_link is None:
            await self._explain_missing_base(model_id, chain_links, effective, caller)
        assert base_link is not None
        base_id = str(base_link["id"])
        bases = {str(b.get("id")): b for b in await self._registry.base_models(caller.token)}
        base = bases.get(base_id)
        if base is None or base_link.get("available") is False:
            raise ModelUnusableError(f"model '{model_id}' cannot run: base model '{base_id}' is not available")
        params = {k: v.get("value") for k, v in (effective.get("params") or {}).items() if isinstance(v, dict)}
        meta = model_file.get("meta") or {}
        capabilities = meta.get("capabilities") or {}
        vision = bool(capabilities.get("vision")) or bool((base.get("capabilities") or {}).get("vision"))
        knowledge = tuple(str(k["id"]) for k in meta.get("knowledge") or [] if isinstance(k, dict) and k.get("id"))
        filters = dict.fromkeys(
            (*_meta_ids(meta, "filterIds", "filter_ids"), *_meta_ids(meta, "defaultFilterIds", "default_filter_ids"))
        )
        return ResolvedModel(
            id=model_id,
            name=str(model_file.get("name") or model_id),
            base_model_id=base_id,
            source=str(base.get("source", "")),
            chain=chain,
            location=await self._location(base),
            params=params,
            vision=vision,
            knowledge_ids=knowledge,
            hidden=bool(model_file.get("hidden")),
            enabled=bool(model_file.get("enabled", True)),
            tool_ids=_meta_ids(meta, "toolIds", "tool_ids"),
            filter_ids=tuple(filters),
            action_ids=_meta_ids(meta, "actionIds", "action_ids"),
        )

    async def _resolve_base_only(self, model_id: str, caller: Caller) -> ResolvedModel:
        """A base model used directly (``gemma3:270m``), without a model file on top."""
        bases = {str(b.get("id")): b for b in await self._registry.base_models(caller.token)}
        base = bases.get(model_id)
        if base is None:
            raise ModelNotFoundError(f"model '{model_id}' does not exist or you cannot read it")
        if base.get("available") is False:
            raise ModelUnusableError(f"base model '{model_id}' is not available from its connection")
        return ResolvedModel(
            id=model_id,
            name=str(base.get("name") or model_id),
            base_model_id=model_id,
            source=str(base.get("source", "")),
            chain=(model_id,),
            location=await self._location(base),
            params=dict(base.get("params") or {}),
            vision=bool((base.get("capabilities") or {}).get("vision")),
        )

    async def _explain_missing_base(
        self, model_id: str, chain_links: list[dict[str, Any]], effective: dict[str, Any], caller: Caller
    ) -> None:
        """The chain stops before a base: a model the caller cannot read, or a base that does not exist."""
        last = str(chain_links[-1]["id"]) if chain_links else model_id
        problems_said = [str(p) for p in effective.get("problems") or []]
        last_file = await self._registry.model(last, caller.token)
        below = (last_file or {}).get("base_model_id")
        # The registry reports an unreadable link as a problem; a base that does not exist is another one.
        unreadable = bool(below) and any(f"'{below}'" in p and "cannot read" in p for p in problems_said)
        if below and unreadable and await self._registry.model(str(below), caller.token) is None:
            bases = {str(b.get("id")) for b in await self._registry.base_models(caller.token)}
            if str(below) not in bases:
                raise ModelAccessDeniedError(
                    f"you cannot read model '{below}', which '{last}' is built on"
                    + ("" if last == model_id else f" (in the chain of '{model_id}')"),
                    model_id=str(below),
                )
        problems = "; ".join(problems_said) or "its chain has no base model"
        raise ModelUnusableError(f"model '{model_id}' cannot run: {problems}")

    async def _location(self, base: dict[str, Any]) -> ModelLocation:
        source = str(base.get("source", ""))
        base_id = str(base.get("id"))
        details = base.get("details") or {}
        if source in ("local", "manual") and details.get("model_digest") and details.get("store_bucket"):
            template = details.get("template")
            context_length = details.get("context_length")
            return ModelLocation(
                backend="local",
                upstream_model=base_id,
                store_bucket=str(details["store_bucket"]),
                model_digest=str(details["model_digest"]),
                chat_template=template if isinstance(template, str) and template.strip() else None,
                context_length=context_length if isinstance(context_length, int) and context_length > 0 else None,
            )
        if source in ("ollama", "openai"):
            connection_id = base.get("connection_id")
            credentials = await self._connection(str(connection_id)) if connection_id else None
            if credentials is None:
                raise ModelUnusableError(f"base model '{base_id}': its {source} connection is gone")
            url, api_key = credentials
            return ModelLocation(backend=source, upstream_model=base_id, url=url, api_key=api_key)  # type: ignore[arg-type]
        raise ModelUnusableError(
            f"base model '{base_id}' (source {source or 'unknown'}) has no backend the gateway can run: "
            "a local one needs details.model_digest and details.store_bucket"
        )

    async def _connection(self, connection_id: str) -> tuple[str, str | None] | None:
        """(url, api key) of a connection, cached for a short while."""
        async with self._connections_lock:
            cached = self._connections.get(connection_id)
            if cached is not None and time.monotonic() < cached[0]:
                return cached[1]
            try:
                body = await self._registry.connection_credentials(connection_id)
            except RegistryUnavailableError as exc:
                raise ModelUnusableError(f"cannot read the model's connection: {exc.message}") from exc
            found = (str(body["url"]), body.get("api_key") or None) if body and body.get("url") else None
            self._connections[connection_id] = (time.monotonic() + _CONNECTIONS_TTL, found)
            return found

    # ---- the selector (answered from the in-memory catalog, see selector_catalog)

    async def listing(self, caller: Caller, *, include_hidden: bool, include_disabled: bool) -> list[ModelListing]:
        index = await self._selector.index(self._selector_wait)
        return index.listings(caller.principal, include_hidden=include_hidden, include_disabled=include_disabled)

    async def listing_protobuf(self, caller: Caller, *, include_hidden: bool, include_disabled: bool) -> bytes:
        """The caller's selector as a serialized ``ListModelsResponse``."""
        index = await self._selector.index(self._selector_wait)
        return index.protobuf(caller.principal, include_hidden=include_hidden, include_disabled=include_disabled)

    async def listing_json(self, caller: Caller) -> bytes:
        """The caller's selector as the body of OpenAI's ``GET /v1/models``."""
        index = await self._selector.index(self._selector_wait)
        return index.json(caller.principal)
