"""Conversations and their message trees in PostgreSQL. Every query is scoped to the owner."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from modelhub_chat_gateway.domain.chat_types import Citation, ContextMode, Usage
from modelhub_chat_gateway.domain.conversation import ConversationRecord, StoredImage, StoredMessage
from modelhub_chat_gateway.domain.tools import ToolStepRecord
from modelhub_chat_gateway.errors import InvalidRequestError
from modelhub_common.errors import DependencyError

_MESSAGE_COLUMNS = (
    "id, conversation_id, parent_id, seq, role, model_id, content, images, status, context_mode, finish_reason,"
    " error_code, error_message, prompt_tokens, completion_tokens, time_to_first_token, total_seconds,"
    " citations, tool_steps, action_id, created_at"
)


def _message(row: dict[str, Any]) -> StoredMessage:
    return StoredMessage(
        id=str(row["id"]),
        conversation_id=str(row["conversation_id"]),
        parent_id=str(row["parent_id"]) if row["parent_id"] else None,
        seq=row["seq"],
        role=row["role"],
        model_id=row["model_id"],
        content=row["content"],
        images=[StoredImage(i["key"], i["mime_type"]) for i in row["images"]],
        status=row["status"],
        context_mode=ContextMode(row["context_mode"]),
        finish_reason=row["finish_reason"],
        error_code=row["error_code"],
        error_message=row["error_message"],
        usage=Usage(row["prompt_tokens"], row["completion_tokens"]),
        time_to_first_token=row["time_to_first_token"],
        total_seconds=row["total_seconds"],
        citations=[Citation(**c) for c in row["citations"]],
        tool_steps=[ToolStepRecord.from_json(t) for t in row["tool_steps"]],
        action_id=row["action_id"],
        created_at=row["created_at"],
    )


def _conversation(row: dict[str, Any]) -> ConversationRecord:
    return ConversationRecord(
        id=str(row["id"]),
        owner_id=row["owner_id"],
        title=row["title"],
        current_message_id=str(row["current_message_id"]) if row["current_message_id"] else None,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _insert_params(m: StoredMessage, replica_id: str | None) -> tuple[Any, ...]:
    return (
        m.id,
        m.conversation_id,
        m.parent_id,
        m.role,
        m.model_id,
        m.content,
        Jsonb([{"key": i.key, "mime_type": i.mime_type} for i in m.images]),
        m.status,
        m.context_mode.value,
        replica_id,
        m.action_id,
    )


_INSERT_MESSAGES = (
    "INSERT INTO messages"
    " (id, conversation_id, parent_id, role, model_id, content, images, status, context_mode, replica_id,"
    " action_id) VALUES"
)
_MESSAGE_ROW = "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"

INTERRUPTED = "interrupted"
_INTERRUPTED_MESSAGE = (
    "the gateway replica streaming this answer stopped before it finished; regenerate the answer to get it again"
)
_INSERT_MESSAGE = f"{_INSERT_MESSAGES} {_MESSAGE_ROW}"


class ConversationRepository:
    """``replica_id`` tags the rows this gateway replica writes, so that others can tell its answers apart."""

    def __init__(self, pool: AsyncConnectionPool, replica_id: str | None = None) -> None:
        self._pool = pool
        self.replica_id = replica_id

    @contextlib.asynccontextmanager
    async def _single_statement(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection in autocommit mode for one statement, which is atomic on its own: no BEGIN and
        COMMIT round trips around it. (Pipeline mode would send them together, but psycopg polls the socket
        for writing while it waits for the answer, which cost more CPU than the round trips saved.)"""
        async with self._pool.connection() as conn:
            await conn.set_autocommit(True)
            try:
                yield conn
            finally:
                # A connection left mid-query is discarded by the pool anyway.
                with contextlib.suppress(psycopg.Error):
                    await conn.set_autocommit(False)

    async def create_turn(
        self,
        conversation: ConversationRecord,
        *,
        is_new: bool,
        messages: Sequence[StoredMessage],
        current_message_id: str,
    ) -> None:
        """The conversation (when new), the user message and the answer rows: one statement, one round trip."""
        if is_new:
            conversation_sql = (
                "INSERT INTO conversations (id, owner_id, title, current_message_id) VALUES (%s, %s, %s, %s)"
            )
            conversation_params: tuple[Any, ...] = (
                conversation.id,
                conversation.owner_id,
                conversation.title,
                current_message_id,
            )
        else:
            conversation_sql = "UPDATE conversations SET current_message_id = %s, updated_at = now() WHERE id = %s"
            conversation_params = (current_message_id, conversation.id)
        rows = ", ".join([_MESSAGE_ROW] * len(messages))
        params = [
            *conversation_params,
            *(value for m in messages for value in _insert_params(m, self.replica_id)),
        ]
        try:
            async with self._single_statement() as conn:
                await conn.execute(f"WITH conversation AS ({conversation_sql}) {_INSERT_MESSAGES} {rows}", params)
        except psycopg.errors.ForeignKeyViolation as exc:
            raise InvalidRequestError("the message to continue from was deleted meanwhile") from exc
        except psycopg.Error as exc:
            raise DependencyError(f"cannot store the turn: {type(exc).__name__}") from exc

    async def finish_answer(self, message: StoredMessage) -> None:
        """The answer's final state and the conversation's ``updated_at``: one statement, one round trip."""
        try:
            async with self._single_statement() as conn:
                await conn.execute(
                    "WITH answer AS (UPDATE messages SET content = %s, status = %s, finish_reason = %s,"
                    " error_code = %s, error_message = %s, prompt_tokens = %s, completion_tokens = %s,"
                    " time_to_first_token = %s, total_seconds = %s, citations = %s, tool_steps = %s, updated_at = now()"
                    " WHERE id = %s)"
                    " UPDATE conversations SET updated_at = now() WHERE id = %s",
                    (
                        message.content,
                        message.status,
                        message.finish_reason,
                        message.error_code,
                        message.error_message,
                        message.usage.prompt_tokens,
                        message.usage.completion_tokens,
                        message.time_to_first_token,
                        message.total_seconds,
                        Jsonb([dataclasses.asdict(c) for c in message.citations]),
                        Jsonb([t.to_json() for t in message.tool_steps]),
                        message.id,
                        message.conversation_id,
                    ),
                )
        except psycopg.Error as exc:
            raise DependencyError(f"cannot store the answer: {type(exc).__name__}") from exc

    async def heartbeat(self) -> None:
        """Records that this replica is alive."""
        if self.replica_id is None:
            raise RuntimeError("a repository without a replica id has no heartbeat")
        try:
            async with self._single_statement() as conn:
                await conn.execute(
                    "INSERT INTO gateway_replicas (id) VALUES (%s) ON CONFLICT (id) DO UPDATE SET seen_at = now()",
                    (self.replica_id,),
                )
        except psycopg.Error as exc:
            raise DependencyError(f"cannot record the replica's heartbeat: {type(exc).__name__}") from exc

    async def retire(self) -> None:
        """Forgets this replica (at shutdown), so answers it leaves behind are swept at once."""
        try:
            async with self._single_statement() as conn:
                await conn.execute("DELETE FROM gateway_replicas WHERE id = %s", (self.replica_id,))
        except psycopg.Error as exc:
            raise DependencyError(f"cannot retire the replica: {type(exc).__name__}") from exc

    async def sweep_interrupted(self, stale_seconds: float) -> int:
        """Marks answers still ``streaming`` whose replica is gone (not seen for ``stale_seconds``) as errors
        with code ``interrupted``; forgets replicas not seen for a day. Returns how many answers it marked.
        Rows written before replicas were tracked (no replica id) count as orphaned after a day."""
        try:
            async with self._single_statement() as conn:
                cursor = await conn.execute(
                    "WITH alive AS (SELECT id FROM gateway_replicas"
                    "               WHERE seen_at > now() - make_interval(secs => %(stale)s)),"
                    " forgotten AS (DELETE FROM gateway_replicas WHERE seen_at < now() - interval '1 day')"
                    " UPDATE messages SET status = 'error', error_code = %(code)s, error_message = %(message)s,"
                    " updated_at = now()"
                    " WHERE status = 'streaming' AND replica_id IS DISTINCT FROM %(me)s"
                    " AND (replica_id IS NOT NULL OR created_at < now() - interval '1 day')"
                    " AND (replica_id IS NULL OR replica_id NOT IN (SELECT id FROM alive))",
                    {
                        "stale": stale_seconds,
                        "code": INTERRUPTED,
                        "message": _INTERRUPTED_MESSAGE,
                        "me": self.replica_id,
                    },
                )
                return cursor.rowcount
        except psycopg.Error as exc:
            raise DependencyError(f"cannot sweep interrupted answers: {type(exc).__name__}") from exc

    async def get(self, conversation_id: str, owner_id: str) -> tuple[ConversationRecord, list[StoredMessage]] | None:
        try:
            async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(
                    "SELECT * FROM conversations WHERE id = %s AND owner_id = %s", (conversation_id, owner_id)
                )
                row = await cur.fetchone()
                if row is None:
                    return None
                await cur.execute(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = %s ORDER BY seq",
                    (conversation_id,),
                )
                return _conversation(row), [_message(r) for r in await cur.fetchall()]
        except psycopg.errors.InvalidTextRepresentation:
            return None  # not a uuid: no such conversation
        except psycopg.Error as exc:
            raise DependencyError(f"cannot read the conversation: {type(exc).__name__}") from exc

    async def recent(self, owner_id: str, limit: int, after: tuple[datetime, str] | None) -> list[ConversationRecord]:
        query = "SELECT * FROM conversations WHERE owner_id = %s"
        params: list[Any] = [owner_id]
        if after is not None:
            query += " AND (updated_at, id) < (%s, %s)"
            params.extend(after)
        query += " ORDER BY updated_at DESC, id DESC LIMIT %s"
        params.append(limit)
        try:
            async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(query, params)
                return [_conversation(r) for r in await cur.fetchall()]
        except psycopg.Error as exc:
            raise DependencyError(f"cannot list conversations: {type(exc).__name__}") from exc

    async def delete(self, conversation_id: str, owner_id: str) -> list[str] | None:
        """Deletes the conversation; returns the image keys it held, or None if there was none to delete."""
        try:
            async with self._pool.connection() as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(
                    "SELECT images FROM messages m JOIN conversations c ON c.id = m.conversation_id"
                    " WHERE c.id = %s AND c.owner_id = %s AND m.images <> '[]'::jsonb",
                    (conversation_id, owner_id),
                )
                keys = [i["key"] for r in await cur.fetchall() for i in r["images"]]
                await cur.execute(
                    "DELETE FROM conversations WHERE id = %s AND owner_id = %s", (conversation_id, owner_id)
                )
                return keys if cur.rowcount else None
        except psycopg.errors.InvalidTextRepresentation:
            return None
        except psycopg.Error as exc:
            raise DependencyError(f"cannot delete the conversation: {type(exc).__name__}") from exc

    async def set_current(self, conversation_id: str, message_id: str, *, only_if: str | None = None) -> bool:
        """Moves the selected branch; with ``only_if``, only when it still points at that message."""
        query = "UPDATE conversations SET current_message_id = %s, updated_at = now() WHERE id = %s"
        params: list[Any] = [message_id, conversation_id]
        if only_if is not None:
            query += " AND current_message_id = %s"
            params.append(only_if)
        try:
            async with self._pool.connection() as conn, conn.transaction():
                cur = await conn.execute(query, params)
                return cur.rowcount > 0
        except psycopg.Error as exc:
            raise DependencyError(f"cannot update the conversation: {type(exc).__name__}") from exc

    async def add_answer(self, message: StoredMessage) -> None:
        """A regenerated answer: a new sibling, which becomes the selected branch."""
        try:
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute(_INSERT_MESSAGE, _insert_params(message, self.replica_id))
                await conn.execute(
                    "UPDATE conversations SET current_message_id = %s, updated_at = now() WHERE id = %s",
                    (message.id, message.conversation_id),
                )
        except psycopg.Error as exc:
            raise DependencyError(f"cannot store the answer: {type(exc).__name__}") from exc

    async def add_action_result(self, message: StoredMessage) -> StoredMessage:
        """An action's output, stored whole as a child of the answer it ran on; the selection stays where it is."""
        try:
            async with self._pool.connection() as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(_INSERT_MESSAGE, _insert_params(message, self.replica_id))
                await cur.execute(
                    "UPDATE messages SET tool_steps = %s, updated_at = now() WHERE id = %s",
                    (Jsonb([t.to_json() for t in message.tool_steps]), message.id),
                )
                await cur.execute(
                    "UPDATE conversations SET updated_at = now() WHERE id = %s", (message.conversation_id,)
                )
                await cur.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = %s", (message.id,))
                row = await cur.fetchone()
        except psycopg.Error as exc:
            raise DependencyError(f"cannot store the action's result: {type(exc).__name__}") from exc
        assert row is not None
        return _message(row)
