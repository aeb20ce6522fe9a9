"""Knowledge events, written to the outbox in the same transaction as the change they describe."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from modelhub.events.v1 import events_pb2
from modelhub_common.auth import Principal
from modelhub_common.events import KNOWLEDGE, new_envelope
from modelhub_common.outbox import enqueue
from modelhub_rag.domain.collection import KnowledgeFile

SOURCE = "rag"
FILE_ADDED = KNOWLEDGE.subject("file_added")
FILE_INDEXED = KNOWLEDGE.subject("file_indexed")
FILE_FAILED = KNOWLEDGE.subject("file_failed")
COLLECTION_DELETED = KNOWLEDGE.subject("collection_deleted")


def _actor(principal: Principal | None) -> tuple[str, str]:
    return (principal.subject, principal.role) if principal else (SOURCE, "service")


def _ids(knowledge_id: str, file_id: str = "") -> events_pb2.SubjectIds:
    return events_pb2.SubjectIds(knowledge_id=knowledge_id, file_id=file_id)


async def file_added(conn: AsyncConnection[Any], file: KnowledgeFile, principal: Principal | None) -> None:
    actor, role = _actor(principal)
    payload = events_pb2.KnowledgeFileAdded(
        knowledge_id=file.collection_id,
        file_id=file.id,
        filename=file.name,
        content_type=file.content_type,
        object_key=file.object_key,
        sha256=file.sha256,
        size_bytes=file.size_bytes,
    )
    envelope = new_envelope(
        FILE_ADDED,
        actor=actor,
        role=role,
        source=SOURCE,
        payload=payload,
        subject_ids=_ids(file.collection_id, file.id),
    )
    await enqueue(conn, FILE_ADDED, envelope)


async def file_indexed(conn: AsyncConnection[Any], file: KnowledgeFile, *, chunks: int, embedder: str) -> None:
    payload = events_pb2.KnowledgeFileIndexed(
        knowledge_id=file.collection_id, file_id=file.id, chunks=chunks, embedder=embedder
    )
    envelope = new_envelope(
        FILE_INDEXED,
        actor=SOURCE,
        role="service",
        source=SOURCE,
        payload=payload,
        subject_ids=_ids(file.collection_id, file.id),
    )
    await enqueue(conn, FILE_INDEXED, envelope)


async def file_failed(conn: AsyncConnection[Any], file: KnowledgeFile, *, code: str, message: str) -> None:
    payload = events_pb2.KnowledgeFileFailed(
        knowledge_id=file.collection_id, file_id=file.id, code=code, message=message[:2000]
    )
    envelope = new_envelope(
        FILE_FAILED,
        actor=SOURCE,
        role="service",
        source=SOURCE,
        payload=payload,
        subject_ids=_ids(file.collection_id, file.id),
    )
    await enqueue(conn, FILE_FAILED, envelope)


async def collection_deleted(conn: AsyncConnection[Any], knowledge_id: str, principal: Principal) -> None:
    actor, role = _actor(principal)
    envelope = new_envelope(
        COLLECTION_DELETED,
        actor=actor,
        role=role,
        source=SOURCE,
        payload=events_pb2.KnowledgeCollectionDeleted(knowledge_id=knowledge_id),
        subject_ids=_ids(knowledge_id),
    )
    await enqueue(conn, COLLECTION_DELETED, envelope)
