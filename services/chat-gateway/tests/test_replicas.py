"""An answer whose gateway replica died mid-stream does not stay ``streaming``: live replicas mark it
interrupted. Real PostgreSQL; the dead replica is a row whose heartbeat stopped (a killed process leaves
exactly that behind), the live one a running gateway."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import psycopg

if TYPE_CHECKING:
    from conftest import Gateway


def _orphan(pg_url: str, message_id: str, replica_id: str, seen_seconds_ago: float) -> None:
    """Turns a stored answer back into one that ``replica_id`` is still streaming."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO gateway_replicas (id, seen_at) VALUES (%s, now() - make_interval(secs => %s))",
            (replica_id, seen_seconds_ago),
        )
        conn.execute(
            "UPDATE messages SET status = 'streaming', error_code = '', replica_id = %s WHERE id = %s",
            (replica_id, message_id),
        )


def _status(pg_url: str, message_id: str) -> tuple[str, str]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute("SELECT status, error_code FROM messages WHERE id = %s", (message_id,)).fetchone()
    assert row is not None
    return row[0], row[1]


async def test_answers_of_a_dead_replica_are_marked_interrupted(gateway_factory: Any, pg_url: str) -> None:
    gateway: Gateway = await gateway_factory(replica_heartbeat_seconds=0.2, replica_stale_seconds=30)
    dead = await gateway.chat(["echo-a:latest"], "left behind")
    alive = await gateway.chat(["echo-b:latest"], "still going")
    dead_answer = dead.answers["echo-a:latest"].message_id
    live_answer = alive.answers["echo-b:latest"].message_id
    _orphan(pg_url, dead_answer, str(uuid.uuid4()), seen_seconds_ago=120)  # past replica_stale_seconds
    _orphan(pg_url, live_answer, str(uuid.uuid4()), seen_seconds_ago=1)  # another replica, still alive

    for _ in range(100):
        if _status(pg_url, dead_answer)[0] != "streaming":
            break
        await asyncio.sleep(0.1)
    assert _status(pg_url, dead_answer) == ("error", "interrupted")
    assert _status(pg_url, live_answer) == ("streaming", "")

    conversation = await gateway.conversation(dead.conversation_id)
    shown = next(m for m in conversation.messages if m.id == dead_answer)
    assert shown.status == "error" and shown.error_code == "interrupted"
    assert "regenerate" in shown.error_message


async def test_a_replica_records_its_heartbeat_and_tags_its_answers(gateway_factory: Any, pg_url: str) -> None:
    gateway: Gateway = await gateway_factory(replica_heartbeat_seconds=0.2)
    result = await gateway.chat(["echo-a:latest"], "who streams me")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT m.replica_id, r.seen_at > now() - interval '10 seconds' FROM messages m"
            " JOIN gateway_replicas r ON r.id = m.replica_id WHERE m.id = %s",
            (result.answers["echo-a:latest"].message_id,),
        ).fetchone()
    assert row is not None, "the answer carries no replica id of a known replica"
    assert row[1] is True
