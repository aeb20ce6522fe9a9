"""The model selector's catalog: every model file and base model, held in memory by each gateway replica.

It is loaded from the registry with the gateway's service token (which sees every model file, hidden and
disabled ones and their access included) and kept current by the registry's model events, so that
``ListModels`` and ``GET /v1/models`` answer from memory, filtered for the caller, without a round trip.
Each entry is encoded once, as protobuf (a ``ModelSummary`` framed as field 1 of ``ListModelsResponse``) and
as JSON (an OpenAI model object), so that an answer is a join of bytes.

Keeping it current has one writer, :meth:`SelectorCatalog.run`. Events are queued as they arrive and taken
in rounds. An event whose version is not newer than the model held is dropped (a redelivery, or one
overtaken), and so is a change older than the deletion of a model that is gone (a tombstone); any other event
makes the catalog fetch that model from the registry, since events name a model without carrying it. The
fetched state is the registry's at the time of the fetch, newer than every event taken so far, so a round
cannot roll the catalog back; several events about one model in a round cost one fetch. A base-model event
re-reads the base models (they carry no version). A full reload, a *resync*, replaces the index: at start,
and when the listener says events may have been missed (a gap, a lost consumer, a reconnect), when more
than ``max_backlog`` events wait, and every ``resync_seconds``. Events queued before a reload starts are
dropped, since it reads later state; the listener subscribes *before* asking for one, so nothing between
the two is lost.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from modelhub.chat.v1 import chat_pb2
from modelhub_chat_gateway.adapters.registry_client import RegistryClient
from modelhub_chat_gateway.domain.model import ModelListing
from modelhub_chat_gateway.domain.tools import action_name
from modelhub_chat_gateway.errors import RegistryUnavailableError
from modelhub_common.auth import Principal, may_read
from modelhub_common.events import EventEnvelope

__all__ = ["CatalogStats", "SelectorCatalog", "SelectorIndex", "file_listing"]

logger = logging.getLogger(__name__)

# ListModelsResponse.models is field 1, length-delimited: tag (1 << 3) | 2.
_MODELS_TAG = b"\x0a"
_JSON_HEAD = b'{"object":"list","data":['
_JSON_TAIL = b"]}"
# Deleted ids remembered so that a late change cannot bring a model back; the oldest are forgotten first.
_MAX_TOMBSTONES = 10_000
# The deepest base chain walked when checking that a caller may read every link (the registry allows 8).
_MAX_CHAIN = 64
# Bytes of encoded answers an index keeps for callers who ask again (an admin's answer at 10,000 files is 2 MB).
_ANSWER_CACHE_BYTES = 64 * 2**20

_AnswerKey = tuple[str, bool, bool, object]


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _protobuf(listing: ModelListing) -> bytes:
    summary = chat_pb2.ModelSummary(
        id=listing.id,
        name=listing.name,
        description=listing.description,
        tags=list(listing.tags),
        avatar_url=listing.avatar_url,
        capabilities=chat_pb2.ModelCapabilities(
            vision=listing.vision, citations=listing.citations, file_upload=listing.file_upload
        ),
        suggestion_prompts=[
            chat_pb2.SuggestionPrompt(title=t, subtitle=s, content=c) for t, s, c in listing.suggestion_prompts
        ],
        hidden=listing.hidden,
        enabled=listing.enabled,
        base_model_id=listing.base_model_id,
        source=listing.source,
        actions=[chat_pb2.ModelAction(id=a, name=action_name(a)) for a in listing.action_ids],
    ).SerializeToString()
    return _MODELS_TAG + _varint(len(summary)) + summary


def _json(listing: ModelListing) -> bytes:
    body = {"id": listing.id, "object": "model", "created": 0, "owned_by": listing.owned_by or "modelhub"}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def file_listing(model: dict[str, Any]) -> ModelListing:
    """A selector entry from a model file as the registry's REST API shows it (``source`` is left empty)."""
    meta = model.get("meta") or {}
    capabilities = meta.get("capabilities") or {}
    prompts: list[tuple[str, str, str]] = []
    for prompt in meta.get("suggestion_prompts") or []:
        if not isinstance(prompt, dict):
            continue
        title = prompt.get("title")
        parts = title if isinstance(title, list) else [title] if isinstance(title, str) else []
        prompts.append(
            (str(parts[0]) if parts else "", str(parts[1]) if len(parts) > 1 else "", str(prompt.get("content", "")))
        )
    return ModelListing(
        id=str(model.get("id")),
        name=str(model.get("name") or model.get("id")),
        description=str(meta.get("description") or ""),
        tags=tuple(str(t) for t in meta.get("tags") or []),
        avatar_url=str(meta.get("profile_image_url") or ""),
        vision=bool(capabilities.get("vision")),
        citations=bool(capabilities.get("citations")),
        file_upload=bool(capabilities.get("file_upload")),
        suggestion_prompts=tuple(prompts),
        hidden=bool(model.get("hidden")),
        enabled=bool(model.get("enabled", True)),
        base_model_id=str(model.get("base_model_id") or model.get("id")),
        owned_by=str(model.get("owner_id") or ""),
        action_ids=tuple(
            dict.fromkeys(str(a) for a in meta.get("actionIds") or meta.get("action_ids") or [] if isinstance(a, str))
        ),
    )


@dataclass(frozen=True, slots=True)
class _Grant:
    principal_type: str
    principal_id: str
    permission: str


@dataclass(frozen=True, slots=True)
class _File:
    id: str
    #: ``base_model_id`` as stored: None when the file is its own base (it overrides the base model of its id).
    base: str | None
    version: int
    owner_id: str
    public_read: bool
    grants: tuple[_Grant, ...]
    listing: ModelListing
    protobuf: bytes
    json: bytes

    @property
    def readers(self) -> Iterator[tuple[str, str]]:
        """(principal type, id) of every grant that lets someone read (write implies read)."""
        for grant in self.grants:
            if grant.permission in ("read", "write") and grant.principal_type in ("user", "group"):
                yield grant.principal_type, grant.principal_id


@dataclass(frozen=True, slots=True)
class _Base:
    id: str
    source: str
    available: bool
    listing: ModelListing
    protobuf: bytes
    json: bytes


def _parse_file(raw: dict[str, Any], source: str) -> _File:
    access = raw.get("access") or {}
    grants = tuple(
        _Grant(str(g.get("principal_type")), str(g.get("principal_id")), str(g.get("permission")))
        for g in access.get("grants") or []
        if isinstance(g, dict)
    )
    listing = dataclasses.replace(file_listing(raw), source=source)
    return _File(
        id=listing.id,
        base=str(raw["base_model_id"]) if raw.get("base_model_id") else None,
        version=int(raw.get("version") or 0),
        owner_id=str(raw.get("owner_id") or ""),
        public_read=bool(access.get("public_read")),
        grants=grants,
        listing=listing,
        protobuf=_protobuf(listing),
        json=_json(listing),
    )


def _parse_base(raw: dict[str, Any]) -> _Base:
    base_id = str(raw.get("id"))
    source = str(raw.get("source", ""))
    listing = ModelListing(
        id=base_id,
        name=str(raw.get("name") or base_id),
        vision=bool((raw.get("capabilities") or {}).get("vision")),
        base_model_id=base_id,
        source=source,
        owned_by=source,
    )
    return _Base(base_id, source, raw.get("available") is not False, listing, _protobuf(listing), _json(listing))


class SelectorIndex:
    """Model files and base models in memory, with the indexes that make one caller's selector cheap.

    Who may read a file is :func:`modelhub_common.auth.may_read`'s rule, evaluated through inverted indexes
    (public files, files by owner, by user grant and by group grant) so that a caller's readable set is a few
    set unions; a file is listed only when the caller may also read every model file its base chain runs
    through, as the gateway would refuse to run it otherwise. Files are listed in id order, then the
    available base models no listed file overrides (a model file with a base model's id), in id order, as
    the registry-backed listing always did. ``source`` of a file is the one of the base model it names, when
    that is an available base model.

    Encoded answers are kept per access (an admin, or a subject with its groups: all a listing depends on),
    format and flags until the next change to the index, which drops them all; so a selector asked again
    with nothing changed, the common case, costs a dictionary lookup rather than a walk of every file.
    """

    def __init__(self) -> None:
        self._files: dict[str, _File] = {}
        self._order: list[str] = []
        self._bases: dict[str, _Base] = {}
        self._base_order: list[str] = []
        self._public: set[str] = set()
        self._hidden: set[str] = set()
        self._disabled: set[str] = set()
        self._by_owner: dict[str, set[str]] = {}
        self._by_user: dict[str, set[str]] = {}
        self._by_group: dict[str, set[str]] = {}
        # base id (or the file's own id when it has none) -> files naming it
        self._dependents: dict[str, set[str]] = {}
        # files whose base is another model file: their chain needs checking per caller
        self._chained: set[str] = set()
        # encoded answers since the last change, least recently used first
        self._answers: OrderedDict[_AnswerKey, bytes] = OrderedDict()
        self._answer_bytes = 0

    # ---- size and lookups

    @property
    def file_count(self) -> int:
        return len(self._files)

    @property
    def base_count(self) -> int:
        return len(self._bases)

    def version(self, model_id: str) -> int | None:
        held = self._files.get(model_id)
        return held.version if held is not None else None

    # ---- changes

    def _source_of(self, base_id: str) -> str:
        base = self._bases.get(base_id)
        return base.source if base is not None and base.available else ""

    def _changed(self) -> None:
        self._answers.clear()
        self._answer_bytes = 0

    def put_file(self, raw: dict[str, Any]) -> None:
        """Adds or replaces a model file from its REST representation."""
        self._changed()
        base_key = str(raw.get("base_model_id") or raw.get("id"))
        entry = _parse_file(raw, self._source_of(base_key))
        old = self._files.get(entry.id)
        if old is not None:
            self._unindex(old)
        else:
            bisect.insort(self._order, entry.id)
            # Files built on this id now run through a model file.
            self._chained.update(self._dependents.get(entry.id, ()))
        self._files[entry.id] = entry
        self._index(entry)

    def remove_file(self, model_id: str) -> bool:
        old = self._files.pop(model_id, None)
        if old is None:
            return False
        self._changed()
        self._unindex(old)
        position = bisect.bisect_left(self._order, model_id)
        del self._order[position]
        self._chained.difference_update(self._dependents.get(model_id, ()))
        return True

    def _index(self, entry: _File) -> None:
        file_id = entry.id
        if entry.public_read:
            self._public.add(file_id)
        if entry.listing.hidden:
            self._hidden.add(file_id)
        if not entry.listing.enabled:
            self._disabled.add(file_id)
        self._by_owner.setdefault(entry.owner_id, set()).add(file_id)
        for kind, who in entry.readers:
            (self._by_user if kind == "user" else self._by_group).setdefault(who, set()).add(file_id)
        self._dependents.setdefault(entry.base or file_id, set()).add(file_id)
        if entry.base is not None and entry.base != file_id and entry.base in self._files:
            self._chained.add(file_id)

    def _unindex(self, entry: _File) -> None:
        file_id = entry.id
        self._public.discard(file_id)
        self._hidden.discard(file_id)
        self._disabled.discard(file_id)
        self._chained.discard(file_id)
        _discard(self._by_owner, entry.owner_id, file_id)
        for kind, who in entry.readers:
            _discard(self._by_user if kind == "user" else self._by_group, who, file_id)
        _discard(self._dependents, entry.base or file_id, file_id)

    def set_bases(self, raws: Iterable[dict[str, Any]]) -> None:
        """Replaces every base model; files naming one whose source shows differently now are re-encoded."""
        self._changed()
        before = {base_id: self._source_of(base_id) for base_id in self._bases}
        self._bases = {base.id: base for base in (_parse_base(raw) for raw in raws)}
        self._base_order = sorted(self._bases)
        changed = {i for i in before.keys() | self._bases.keys() if before.get(i, "") != self._source_of(i)}
        for base_id in changed:
            for file_id in self._dependents.get(base_id, ()):
                entry = self._files[file_id]
                listing = dataclasses.replace(entry.listing, source=self._source_of(base_id))
                self._files[file_id] = dataclasses.replace(
                    entry, listing=listing, protobuf=_protobuf(listing), json=_json(listing)
                )

    # ---- one caller's selector

    def _readable(self, principal: Principal) -> set[str] | None:
        """Ids of the files ``principal`` may read; None for an admin (every file)."""
        if principal.is_admin:
            return None
        readable = set(self._public)
        readable.update(self._by_owner.get(principal.subject, ()))
        readable.update(self._by_user.get(principal.subject, ()))
        for group in principal.groups:
            readable.update(self._by_group.get(group, ()))
        return readable

    def _chain_readable(self, file_id: str, readable: set[str]) -> bool:
        seen = {file_id}
        base = self._files[file_id].base
        while base is not None and base in self._files and base not in seen and len(seen) < _MAX_CHAIN:
            if base not in readable:
                return False
            seen.add(base)
            base = self._files[base].base
        return True

    def _selected(
        self, principal: Principal, *, include_hidden: bool, include_disabled: bool
    ) -> tuple[list[_File], list[_Base]]:
        readable = self._readable(principal)
        shown = set(self._files) if readable is None else set(readable)
        if not include_hidden:
            shown -= self._hidden
        if not include_disabled:
            shown -= self._disabled
        if readable is not None:
            shown -= {f for f in shown & self._chained if not self._chain_readable(f, readable)}
        # Walking the whole order is cheaper than sorting unless few files are shown.
        ids = sorted(shown) if len(shown) * 8 < len(self._order) else [i for i in self._order if i in shown]
        files = [self._files[i] for i in ids]
        bases = [b for i in self._base_order if (b := self._bases[i]).available and i not in shown]
        return files, bases

    def _answer(self, key: _AnswerKey, encode: Callable[[], bytes]) -> bytes:
        found = self._answers.get(key)
        if found is not None:
            self._answers.move_to_end(key)
            return found
        body = encode()
        self._answers[key] = body
        self._answer_bytes += len(body)
        while self._answer_bytes > _ANSWER_CACHE_BYTES and len(self._answers) > 1:
            _, dropped = self._answers.popitem(last=False)
            self._answer_bytes -= len(dropped)
        return body

    @staticmethod
    def _access(principal: Principal) -> object:
        """What a caller's listing depends on."""
        return True if principal.is_admin else (principal.subject, frozenset(principal.groups))

    def protobuf(self, principal: Principal, *, include_hidden: bool, include_disabled: bool) -> bytes:
        """The caller's selector as a serialized ``ListModelsResponse``."""

        def encode() -> bytes:
            files, bases = self._selected(principal, include_hidden=include_hidden, include_disabled=include_disabled)
            return b"".join([f.protobuf for f in files] + [b.protobuf for b in bases])

        return self._answer(("protobuf", include_hidden, include_disabled, self._access(principal)), encode)

    def json(self, principal: Principal) -> bytes:
        """The caller's selector (hidden and disabled files left out) as OpenAI's model list."""

        def encode() -> bytes:
            files, bases = self._selected(principal, include_hidden=False, include_disabled=False)
            return _JSON_HEAD + b",".join([f.json for f in files] + [b.json for b in bases]) + _JSON_TAIL

        return self._answer(("json", False, False, self._access(principal)), encode)

    def listings(self, principal: Principal, *, include_hidden: bool, include_disabled: bool) -> list[ModelListing]:
        files, bases = self._selected(principal, include_hidden=include_hidden, include_disabled=include_disabled)
        return [f.listing for f in files] + [b.listing for b in bases]

    def readable_by(self, principal: Principal, model_id: str) -> bool:
        """:func:`may_read` for one held file (the rule the indexes implement)."""
        entry = self._files.get(model_id)
        return entry is not None and may_read(
            principal, owner_id=entry.owner_id, public_read=entry.public_read, grants=entry.grants
        )


def _discard(index: dict[str, set[str]], key: str, value: str) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(value)
        if not members:
            del index[key]


# ---------------------------------------------------------------------------------------------------------
# Keeping it current


@dataclass
class CatalogStats:
    """What the catalog has done since start, for its log lines (and tests)."""

    resyncs: int = 0
    last_resync_reason: str = ""
    events_applied: int = 0
    events_skipped: int = 0
    fetches: int = 0
    #: When the registry wrote the last event taken from the queue.
    last_event_at: datetime | None = None
    loaded: bool = False
    load_failures: int = 0


@dataclass
class _Pending:
    """What one round must fetch: model ids with the newest time (registry clock) of the events naming them."""

    files: dict[str, float] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    bases: bool = False


def _occurred(envelope: EventEnvelope) -> float:
    return envelope.occurred_at.seconds + envelope.occurred_at.nanos / 1e9


class SelectorCatalog:
    def __init__(
        self,
        registry: RegistryClient,
        *,
        page_size: int = 200,
        fetch_concurrency: int = 8,
        max_backlog: int = 1000,
        resync_seconds: float = 0.0,
        retry_seconds: float = 2.0,
        log_seconds: float = 60.0,
    ) -> None:
        self._registry = registry
        self._page_size = page_size
        self._fetch_concurrency = fetch_concurrency
        self._max_backlog = max_backlog
        self._resync_seconds = resync_seconds
        self._retry_seconds = retry_seconds
        self._log_seconds = log_seconds
        self._index = SelectorIndex()
        self._queue: deque[EventEnvelope] = deque()
        self._tombstones: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._resync_reason: str | None = None
        self._loaded = asyncio.Event()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self.stats = CatalogStats()

    # ---- what the listener calls (never blocks)

    def submit(self, envelope: EventEnvelope) -> None:
        """Queues a model event for the next round."""
        self._queue.append(envelope)
        self._idle.clear()
        self._wake.set()

    def request_resync(self, reason: str) -> None:
        """Asks for a full reload. The caller must already be subscribed: the reload starts afterwards."""
        if self._resync_reason is None:
            self._resync_reason = reason
        self._idle.clear()
        self._wake.set()

    # ---- what the selector calls

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    @property
    def loaded_event(self) -> asyncio.Event:
        """Set once the first load is done (and stays set)."""
        return self._loaded

    async def index(self, wait_seconds: float) -> SelectorIndex:
        """The current index; waits up to ``wait_seconds`` for the first load (a replica just started)."""
        if not self._loaded.is_set():
            try:
                await asyncio.wait_for(self._loaded.wait(), wait_seconds)
            except TimeoutError as exc:
                raise RegistryUnavailableError(
                    "the model catalog has not been loaded from the registry yet; try again shortly"
                ) from exc
        return self._index

    async def readiness_check(self) -> None:
        if not self._loaded.is_set():
            raise RegistryUnavailableError("the model catalog has not been loaded from the registry yet")

    async def wait_idle(self) -> None:
        """Until every queued event is applied and no reload is due (for tests and benchmarks)."""
        await self._idle.wait()

    def status(self) -> dict[str, Any]:
        oldest = _occurred(self._queue[0]) if self._queue else None
        return {
            "model_files": self._index.file_count,
            "base_models": self._index.base_count,
            "events_applied": self.stats.events_applied,
            "events_skipped": self.stats.events_skipped,
            "fetches": self.stats.fetches,
            "resyncs": self.stats.resyncs,
            "backlog": len(self._queue),
            # How far behind the registry: the age of the oldest event not applied yet.
            "lag_seconds": round(max(time.time() - oldest, 0.0), 3) if oldest is not None else 0.0,
            "last_event_at": self.stats.last_event_at.isoformat() if self.stats.last_event_at else None,
        }

    # ---- the one writer

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_log = loop.time() + self._log_seconds
        next_resync = loop.time() + self._resync_seconds if self._resync_seconds > 0 else None
        while not stop.is_set():
            self._wake.clear()
            now = loop.time()
            if now >= next_log:
                logger.info("model catalog", extra=self.status())
                next_log = now + self._log_seconds
            if next_resync is not None and now >= next_resync:
                self.request_resync("periodic")
            if self._resync_reason is not None:
                if await self._try_resync():
                    if next_resync is not None:
                        next_resync = loop.time() + self._resync_seconds
                else:
                    await _wait_any(stop, None, self._retry_seconds)
                continue
            if self._queue:
                if len(self._queue) > self._max_backlog:
                    self.request_resync("backlog")
                    continue
                await self._round()
                continue
            self._idle.set()
            until = min(t for t in (next_log, next_resync) if t is not None)
            await _wait_any(stop, self._wake, max(until - loop.time(), 0.0))

    async def _try_resync(self) -> bool:
        reason = self._resync_reason or "asked"
        self._resync_reason = None
        try:
            await self._resync(reason)
        except RegistryUnavailableError as exc:
            self.stats.load_failures += 1
            if self._resync_reason is None:
                self._resync_reason = reason
            logger.warning(
                "cannot load the model catalog from the registry; will retry",
                extra={"reason": reason, "error": exc.message, "retry_seconds": self._retry_seconds},
            )
            return False
        return True

    async def _resync(self, reason: str) -> None:
        began = time.monotonic()
        # Everything queued so far happened before this read starts, so the read covers it.
        self._queue.clear()
        index = SelectorIndex()
        index.set_bases(await self._registry.all_base_models())
        async for page in self._registry.all_models(page_size=self._page_size):
            for raw in page:
                index.put_file(raw)
        self._index = index
        self._tombstones.clear()
        self.stats.resyncs += 1
        self.stats.last_resync_reason = reason
        self.stats.loaded = True
        self._loaded.set()
        logger.info(
            "model catalog loaded",
            extra={**self.status(), "reason": reason, "seconds": round(time.monotonic() - began, 3)},
        )

    def _decide(self, envelope: EventEnvelope, pending: _Pending) -> None:
        """Drops a stale event or notes what it makes the round fetch."""
        occurred = _occurred(envelope)
        self.stats.last_event_at = datetime.fromtimestamp(occurred, UTC)
        kind = envelope.WhichOneof("payload")
        if kind == "model_changed" and (
            envelope.model_changed.is_base or envelope.type.rpartition(".")[2].startswith("base_model_")
        ):
            pending.bases = True
            self.stats.events_applied += 1
            return
        if kind == "model_changed":
            model_id, version = envelope.model_changed.model_id, envelope.model_changed.version
            if not model_id:
                return
            held = self._index.version(model_id)
            tombstone = self._tombstones.get(model_id)
            if held is not None and version <= held:
                self.stats.events_skipped += 1
                return
            if held is None and tombstone is not None and occurred <= tombstone[1]:
                self.stats.events_skipped += 1
                return
        elif kind == "model_deleted":
            model_id, version = envelope.model_deleted.model_id, envelope.model_deleted.last_version
            if not model_id:
                return
            held = self._index.version(model_id)
            if held is not None and held > version:
                # A later model with the same id is held: this deletion is of an earlier one.
                self.stats.events_skipped += 1
                return
            if held is None:
                self._remember_deleted(model_id, version, occurred)
                self.stats.events_skipped += 1
                return
            # Held at or below the deleted version: confirmed by a fetch (the id may have been created again).
        else:
            return
        pending.files[model_id] = max(occurred, pending.files.get(model_id, 0.0))
        pending.versions[model_id] = max(version, pending.versions.get(model_id, 0))
        self.stats.events_applied += 1

    def _remember_deleted(self, model_id: str, version: int, occurred: float) -> None:
        old = self._tombstones.pop(model_id, None)
        if old is not None:
            version, occurred = max(version, old[0]), max(occurred, old[1])
        self._tombstones[model_id] = (version, occurred)
        while len(self._tombstones) > _MAX_TOMBSTONES:
            self._tombstones.popitem(last=False)

    async def _round(self) -> None:
        pending = _Pending()
        while self._queue:
            self._decide(self._queue.popleft(), pending)
        try:
            if pending.bases:
                self._index.set_bases(await self._registry.all_base_models())
            if pending.files:
                await self._fetch(pending)
        except RegistryUnavailableError as exc:
            # The events are taken: what they would have fetched is read again by a reload.
            logger.warning("cannot fetch changed models from the registry", extra={"error": exc.message})
            self.request_resync("fetch failed")

    async def _fetch(self, pending: _Pending) -> None:
        limit = asyncio.Semaphore(self._fetch_concurrency)

        async def one(model_id: str) -> tuple[str, dict[str, Any] | None]:
            async with limit:
                return model_id, await self._registry.any_model(model_id)

        results = await asyncio.gather(*(one(model_id) for model_id in pending.files))
        self.stats.fetches += len(results)
        for model_id, raw in results:
            if raw is None:
                self._index.remove_file(model_id)
                self._remember_deleted(model_id, pending.versions[model_id], pending.files[model_id])
            else:
                self._tombstones.pop(model_id, None)
                self._index.put_file(raw)


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event | None, timeout: float) -> None:
    """Returns when ``stop`` or ``wake`` is set, or after ``timeout`` seconds."""
    waiters = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
