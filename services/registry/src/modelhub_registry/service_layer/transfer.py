"""Export and import in Open WebUI's file shapes. An import writes every item or none."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from modelhub_common.auth import Principal
from modelhub_registry.adapters.knowledge_client import KnowledgeClient, KnowledgeUnavailableError
from modelhub_registry.adapters.models_repository import AvatarRef, StoredModel
from modelhub_registry.domain.access import can_write
from modelhub_registry.domain.avatars import Avatar, AvatarError, process_avatar
from modelhub_registry.domain.model_file import ModelFile
from modelhub_registry.domain.openwebui import (
    ImportDocumentError,
    ImportItem,
    ItemError,
    export_row,
    normalize_item,
    parse_import_document,
    to_openwebui,
)
from modelhub_registry.errors import InvalidModelError, TooLargeError
from modelhub_registry.service_layer import events
from modelhub_registry.service_layer.filters import FilterService
from modelhub_registry.service_layer.models import ModelService, now, spec_dump, spec_values
from modelhub_registry.service_layer.tool_servers import ToolServerService

# What json.dumps does with its defaults, built once.
_ENCODER = json.JSONEncoder()

ImportMode = Literal["create", "upsert"]


@dataclass
class ImportReport:
    dry_run: bool
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    knowledge_checked: bool = True
    """Every knowledge collection the file refers to was looked up in the RAG service."""


class _DryRunRollback(Exception):
    """Raised inside the transaction of a dry run so that nothing it wrote stays."""


class TransferService:
    def __init__(
        self,
        models: ModelService,
        *,
        knowledge: KnowledgeClient | None = None,
        tool_servers: ToolServerService | None = None,
        filters: FilterService | None = None,
    ) -> None:
        self.models = models
        self.knowledge = knowledge
        self.tool_servers = tool_servers
        self.filters = filters

    # ---- export

    async def export_object(self, stored: StoredModel) -> dict[str, Any]:
        return to_openwebui(stored.model, avatar_data_uri=await self.models.avatar_data_uri(stored))

    async def export_one(self, model_id: str, principal: Principal) -> dict[str, Any]:
        return await self.export_object(await self.models.get(model_id, principal))

    async def export_all(self, principal: Principal, *, flush_bytes: int = 256 * 1024) -> AsyncIterator[bytes]:
        """The JSON array straight from one server-side cursor, each row encoded once (no model objects: the
        rows hold what validation accepted), in pieces of about ``flush_bytes``: memory stays flat however
        many models there are."""
        parts: list[bytes] = [b"["]
        size = 1
        first = True
        async for row in self.models.stream_readable_rows(principal):
            avatar = await self.models.row_avatar_data_uri(row) if row["avatar_key"] or row["avatar_url"] else None
            encoded = _ENCODER.encode(export_row(row, avatar_data_uri=avatar)).encode()
            parts.append(encoded if first else b"," + encoded)
            size += len(encoded) + 1
            first = False
            if size >= flush_bytes:
                yield b"".join(parts)
                parts, size = [], 0
        parts.append(b"]")
        yield b"".join(parts)

    # ---- import

    async def import_document(
        self, raw: bytes, principal: Principal, *, mode: ImportMode, dry_run: bool, token: str = ""
    ) -> ImportReport:
        """``token`` is the caller's bearer token, for looking up knowledge collections as the caller."""
        limits = self.models.limits
        try:
            documents = parse_import_document(raw, limits)
        except ImportDocumentError as exc:
            error = TooLargeError if exc.http_status == 413 else InvalidModelError
            raise error(exc.message, code=exc.code) from exc

        report = ImportReport(dry_run=dry_run)
        errors: list[ItemError] = []
        items: list[ImportItem] = []
        for index, document in enumerate(documents):
            result = normalize_item(document, index, limits)
            if isinstance(result, ItemError):
                errors.append(result)
            else:
                items.append(result)

        seen: dict[str, int] = {}
        for item in items:
            if item.spec.id in seen:
                errors.append(ItemError(item.index, item.spec.id, f"id: repeats item {seen[item.spec.id]}"))
            seen.setdefault(item.spec.id, item.index)

        avatars: dict[int, Avatar] = {}
        for item in items:
            for warning in item.warnings:
                report.warnings.append({"index": item.index, "id": item.spec.id, "message": warning})
            if item.avatar is not None:
                try:
                    avatars[item.index] = process_avatar(
                        item.avatar.data, max_bytes=limits.max_avatar_bytes, max_pixels=limits.max_avatar_pixels
                    )
                except AvatarError as exc:
                    report.warnings.append(
                        {"index": item.index, "id": item.spec.id, "message": f"avatar dropped: {exc.message}"}
                    )

        # Before the transaction: no row stays locked while the RAG service answers.
        await self._check_knowledge(items, token, report)
        await self._check_tool_ids(items, report)
        await self._check_filter_ids(items, report)

        try:
            async with self.models.pool.connection() as conn, conn.transaction():
                existing: dict[str, StoredModel] = {}
                for item in items:
                    stored = await self.models.models.get(conn, item.spec.id, for_update=True)
                    if stored is not None:
                        existing[item.spec.id] = stored
                        if mode == "create":
                            errors.append(
                                ItemError(item.index, item.spec.id, "id: already exists; import with mode=upsert")
                            )
                        elif not can_write(stored.model, principal):
                            errors.append(ItemError(item.index, item.spec.id, "id: exists and you cannot change it"))
                    elif item.spec.base_model_id is not None and await self.models.base_models.get(conn, item.spec.id):
                        errors.append(ItemError(item.index, item.spec.id, "id: is the id of a base model"))
                errors.extend(await self._chain_problems(conn, items, existing))
                if errors:
                    errors.sort(key=lambda e: e.index)
                    raise InvalidModelError(
                        f"{len(errors)} of {len(documents)} items are invalid; nothing was imported",
                        code="import_rejected",
                        details={
                            "errors": [{"index": e.index, "id": e.id, "reason": e.reason} for e in errors],
                            "warnings": report.warnings,
                        },
                    )
                batch_ids = {item.spec.id for item in items}
                for item in items:
                    await self._write_item(
                        conn,
                        item,
                        existing.get(item.spec.id),
                        avatars.get(item.index),
                        principal,
                        report,
                        dry_run,
                        batch_ids,
                    )
                if dry_run:
                    raise _DryRunRollback
        except _DryRunRollback:
            pass
        return report

    async def _check_tool_ids(self, items: list[ImportItem], report: ImportReport) -> None:
        """A warning per ``meta.toolIds`` entry that names no registered tool server (the item is kept)."""
        if self.tool_servers is None:
            return
        unknown = set(await self.tool_servers.unknown_tool_ids([t for item in items for t in item.spec.meta.tool_ids]))
        for item in items:
            for tool_id in item.spec.meta.tool_ids:
                if tool_id in unknown:
                    report.warnings.append(
                        {
                            "index": item.index,
                            "id": item.spec.id,
                            "message": f"tool '{tool_id}' names no registered tool server; model '{item.spec.id}'"
                            " refers to it (stored; usable once an admin registers it)",
                        }
                    )

    async def _check_filter_ids(self, items: list[ImportItem], report: ImportReport) -> None:
        """A warning per ``meta.filterIds`` / ``meta.defaultFilterIds`` entry naming no configured filter."""
        if self.filters is None:
            return
        named = [f for item in items for f in (*item.spec.meta.filter_ids, *item.spec.meta.default_filter_ids)]
        unknown = set(await self.filters.unknown_filter_ids(named))
        for item in items:
            for filter_id in dict.fromkeys((*item.spec.meta.filter_ids, *item.spec.meta.default_filter_ids)):
                if filter_id in unknown:
                    report.warnings.append(
                        {
                            "index": item.index,
                            "id": item.spec.id,
                            "message": f"filter '{filter_id}' is not configured; model '{item.spec.id}' names it"
                            " (stored; it takes effect once an admin adds it)",
                        }
                    )

    async def _check_knowledge(self, items: list[ImportItem], token: str, report: ImportReport) -> None:
        """A warning per knowledge collection the RAG service does not know, naming the model that uses it.
        Files (``type: file``) are not looked up: the RAG service keeps files inside collections."""
        wanted = {
            item.index: [ref.id for ref in item.spec.meta.knowledge if ref.type == "collection"] for item in items
        }
        if not any(wanted.values()):
            return
        if self.knowledge is None:
            report.knowledge_checked = False
            report.warnings.append(
                {
                    "index": None,
                    "id": None,
                    "message": "knowledge references were not checked: this registry has no RAG service URL"
                    " (MODELHUB_REGISTRY_RAG_URL)",
                }
            )
            return
        try:
            found = await self.knowledge.lookup((k for ids in wanted.values() for k in ids), token)
        except KnowledgeUnavailableError as exc:
            report.knowledge_checked = False
            report.warnings.append(
                {"index": None, "id": None, "message": f"knowledge references were not checked: {exc.message}"}
            )
            return
        for item in items:
            for knowledge_id in wanted[item.index]:
                # One message for both, so an import cannot tell a stranger that a private collection exists.
                if knowledge_id not in found.missing and knowledge_id not in found.unreadable:
                    continue
                problem = "does not exist here or you cannot read it"
                report.warnings.append(
                    {
                        "index": item.index,
                        "id": item.spec.id,
                        "message": f"knowledge '{knowledge_id}' {problem}; model '{item.spec.id}' refers to it",
                    }
                )

    async def _chain_problems(
        self, conn: Any, items: list[ImportItem], existing: dict[str, StoredModel]
    ) -> list[ItemError]:
        """Bases missing here are warnings (the file may have come from another instance); loops are errors."""
        batch = {item.spec.id: item.spec.base_model_id for item in items}
        problems: list[ItemError] = []
        for item in items:
            seen = {item.spec.id}
            current = item.spec.base_model_id
            while current is not None:
                if current in seen:
                    problems.append(ItemError(item.index, item.spec.id, f"base_model_id: '{current}' leads back here"))
                    break
                seen.add(current)
                if current in batch:
                    current = batch[current]
                    continue
                found, base = await self.models.models.base_of(conn, current)
                if not found:
                    break
                current = base
        return problems

    async def _write_item(
        self,
        conn: Any,
        item: ImportItem,
        stored: StoredModel | None,
        avatar: Avatar | None,
        principal: Principal,
        report: ImportReport,
        dry_run: bool,
        batch_ids: set[str],
    ) -> None:
        spec = item.spec
        if await self._base_missing(conn, spec.base_model_id or spec.id, batch_ids, principal):
            # One message whether the base is missing or someone else's private model (no existence oracle).
            report.warnings.append(
                {
                    "index": item.index,
                    "id": spec.id,
                    "message": f"base model '{spec.base_model_id or spec.id}' does not exist here yet or you cannot"
                    " read it; the model is not usable until it appears",
                }
            )
        ref = None
        if avatar is not None:
            ref = AvatarRef(self.models.avatar_key(avatar), avatar.content_type, avatar.etag, None)
            if not dry_run:
                await self.models.store.put_bytes(
                    self.models.bucket, ref.key or "", avatar.data, content_type=avatar.content_type
                )
        elif item.avatar_url:
            ref = AvatarRef(None, None, None, item.avatar_url)

        if stored is None:
            stamp = now()
            model = ModelFile(
                **spec_values(spec),
                owner_id=principal.subject,
                created_at=item.created_at or stamp,
                updated_at=stamp,
                version=1,
            )
            await self.models.models.insert(conn, model)
            if ref is not None:
                await self.models.models.set_avatar(conn, model.id, ref)
            await self.models.models.add_revision(
                conn, model, action="imported", actor=principal.subject, changed_fields=[]
            )
            await events.model_changed(conn, "imported", model, principal, [])
            report.created.append(model.id)
            return
        avatar_changed = ref is not None and ref != stored.avatar
        if spec_dump(stored.model) == spec_dump(spec) and not avatar_changed:
            report.unchanged.append(spec.id)
            return
        model, fields = await self.models._save_change(conn, stored, spec, principal, "imported")
        if avatar_changed and ref is not None:
            await self.models.models.set_avatar(conn, spec.id, ref)
            if not fields:
                model = model.model_copy(update={"updated_at": now(), "version": model.version + 1})
                await self.models.models.update(conn, model)
                fields = ["meta.profile_image_url"]
                await self.models.models.add_revision(
                    conn, model, action="imported", actor=principal.subject, changed_fields=fields
                )
                await events.model_changed(conn, "imported", model, principal, fields)
        report.updated.append(spec.id)

    async def _base_missing(self, conn: Any, base_id: str, batch_ids: set[str], principal: Principal) -> bool:
        if base_id in batch_ids:
            return False
        found, _ = await self.models.models.readable_base_of(conn, base_id, principal)
        if found:
            return False
        return await self.models.base_models.get(conn, base_id) is None


def export_timestamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%d-%H%M%S")
