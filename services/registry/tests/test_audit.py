"""The audit log: changes, denials and security-relevant reads leave one row each, readable by admins only."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import nats
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from modelhub.events.v1 import events_pb2
from modelhub_common.audit import RECORDED_SUBJECT, AuditEntry, AuditTrail, AuditWriter, current_trail
from modelhub_common.events import AUDIT, EventEnvelope, new_envelope
from modelhub_common.outbox import enqueue, enqueue_with
from modelhub_common.webapp import PRINCIPAL_SCOPE_KEY
from modelhub_registry.service_layer.audit import AuditLog

if TYPE_CHECKING:
    from conftest import Registry


def _rows(reg: Registry, **query: Any) -> list[dict[str, Any]]:
    response = reg.client.get("/api/v1/audit", params={"limit": 1000, **query}, headers=reg.admin)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_changes_denials_and_sensitive_reads_are_recorded_and_plain_reads_are_not(
    make_registry: Callable[..., Registry],
) -> None:
    reg = make_registry()
    reg.add_base()
    alice, bob = reg.as_user("alice"), reg.as_user("bob")
    reg.create(alice, id="alices", name="Alice's")
    assert (
        reg.client.post(
            "/api/v1/models", json={"id": "alices", "name": "again", "base_model_id": "llama3.1:8b"}, headers=alice
        ).status_code
        == 409
    )
    assert reg.client.delete("/api/v1/models/alices", headers=bob).status_code == 404  # a stranger
    assert reg.client.post("/api/v1/tool-servers", json={"id": "t"}, headers=bob).status_code == 403
    assert reg.client.post("/api/v1/models", json={}).status_code == 401
    assert reg.client.get("/api/v1/models", headers=alice).status_code == 200
    assert reg.client.get("/api/v1/models/export", headers=reg.admin).status_code == 200

    rows = _rows(reg, source="registry")
    summary = [(r["actor"], r["action"], r["target"], r["outcome"], r["status"]) for r in reversed(rows)]
    assert ("root", "POST /api/v1/base-models", "", "ok", 201) in summary
    assert ("alice", "POST /api/v1/models", "", "ok", 201) in summary
    assert ("alice", "POST /api/v1/models", "", "failed", 409) in summary  # rolled back: never an ok row
    assert ("bob", "DELETE /api/v1/models/{model_id:path}", "alices", "failed", 404) in summary
    assert ("bob", "POST /api/v1/tool-servers", "", "denied", 403) in summary
    assert ("anonymous", "POST /api/v1/models", "", "denied", 401) in summary
    assert ("root", "GET /api/v1/models/export", "", "ok", 200) in summary
    assert not any(r["action"] == "GET /api/v1/models" for r in rows)  # ordinary reads are not audited
    assert all(r["source_address"] and r["request_id"] for r in rows)
    ok_creates = [r for r in rows if r["action"] == "POST /api/v1/models" and r["outcome"] == "ok"]
    assert len(ok_creates) == 1


def test_the_log_is_for_admins_filtered_and_paged(make_registry: Callable[..., Registry]) -> None:
    reg = make_registry()
    reg.add_base()
    for n in range(5):
        reg.create(reg.as_user("carol"), id=f"c{n}", name=f"C{n}")
    refused = reg.client.get("/api/v1/audit", headers=reg.as_user("carol"))
    assert refused.status_code == 403

    # Only this registry's own rows: other services' records of earlier tests may reach it over NATS.
    carol = _rows(reg, actor="carol", source="registry")
    assert len(carol) == 6 and carol[0]["action"] == "GET /api/v1/audit" and carol[0]["outcome"] == "denied"
    creates = _rows(reg, action="POST /api/v1/models", actor="carol", source="registry")
    assert len(creates) == 5
    pages: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"actor": "carol", "source": "registry", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = reg.client.get("/api/v1/audit", params=params, headers=reg.admin).json()
        pages.extend(body["items"])
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert [r["id"] for r in pages] == [r["id"] for r in carol]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert _rows(reg, since=future) == []
    bad = reg.client.get("/api/v1/audit", params={"cursor": "nope"}, headers=reg.admin)
    assert bad.status_code == 422 and "cursor" in bad.text


def test_rows_past_the_retention_are_swept(make_registry: Callable[..., Registry]) -> None:
    reg = make_registry()
    url = reg.settings.database_url.get_secret_value()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO audit_log (at, actor, actor_role, action, outcome, status)"
            " VALUES (now() - interval '40 days', 'old', 'user', 'POST /x', 'ok', 201),"
            " (now() - interval '1 day', 'new', 'user', 'POST /x', 'ok', 201)"
        )

    async def sweep() -> int:
        async with AsyncConnectionPool(url, open=False) as pool:
            return await AuditLog(pool, retention_days=30).sweep(datetime.now(UTC))

    assert asyncio.run(sweep()) == 1
    with psycopg.connect(url) as conn:
        left = [r[0] for r in conn.execute("SELECT actor FROM audit_log WHERE action = 'POST /x'")]
    assert left == ["new"]


#: The probe changes' own event, on a subject no service consumes.
PROBE = AUDIT.subject("probe")


def _scope(actor: str) -> dict[str, Any]:
    """What an audited request's ASGI scope holds once it is routed and its caller verified."""
    return {
        "type": "http",
        "method": "DELETE",
        "route": SimpleNamespace(path="/api/v1/models/{model_id:path}", status_code=200),
        "path_params": {"model_id": "gone"},
        "client": ("10.0.0.7", 4711),
        PRINCIPAL_SCOPE_KEY: SimpleNamespace(subject=actor, role="user"),
    }


def _event() -> EventEnvelope:
    return new_envelope(
        PROBE,
        actor="t",
        role="user",
        source="registry",
        payload=events_pb2.ModelDeleted(model_id="gone"),
    )


async def _change(url: str, actor: str, *, single_statement: bool, fail: bool) -> None:
    """A change as a route makes it, with the request's audit trail set: its event in the outbox, then
    (``fail``) an error that rolls the transaction back."""
    token = current_trail.set(AuditTrail(_scope(actor), AuditWriter("registry", keeps_rows=True)))
    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            if single_statement:
                # One statement, atomic on its own; a failing one takes everything with it.
                queries = "probe AS (UPDATE outbox SET subject = subject WHERE id = 1 / %(d)s::int RETURNING id)"
                await enqueue_with(conn, queries, {"d": 0 if fail else 1}, PROBE, _event())
                return
            async with conn.transaction():
                await enqueue(conn, PROBE, _event())
                if fail:
                    raise RuntimeError("the change fails after its event was added")
    finally:
        current_trail.reset(token)


@pytest.mark.parametrize("single_statement", [False, True], ids=["transaction", "single-statement"])
def test_a_change_is_recorded_in_its_own_transaction_and_never_when_it_rolls_back(
    make_registry: Callable[..., Registry], single_statement: bool
) -> None:
    reg = make_registry()
    url = reg.settings.database_url.get_secret_value()
    with pytest.raises((RuntimeError, psycopg.errors.DivisionByZero)):
        asyncio.run(_change(url, "rolled-back", single_statement=single_statement, fail=True))
    asyncio.run(_change(url, "committed", single_statement=single_statement, fail=False))

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT actor, action, target, outcome, status, source_address, event_id FROM audit_log"
            " WHERE actor IN ('rolled-back', 'committed')"
        ).fetchall()
        assert [r[:6] for r in rows] == [
            ("committed", "DELETE /api/v1/models/{model_id:path}", "gone", "ok", 200, "10.0.0.7")
        ]
        # The audit event went into the outbox with the row, and only for the change that committed.
        published = conn.execute("SELECT payload FROM outbox WHERE subject = %s", (RECORDED_SUBJECT,)).fetchall()
    envelopes = [EventEnvelope.FromString(bytes(p[0])) for p in published]
    assert [(e.id, e.audit_recorded.actor) for e in envelopes] == [(rows[0][6], "committed")]


def test_every_record_is_published_and_other_services_records_are_kept_once(
    make_registry: Callable[..., Registry], nats_url: str
) -> None:
    reg = make_registry()
    reg.add_base()
    reg.create(reg.as_user("erin"), id="erins", name="Erin's")
    url = reg.settings.database_url.get_secret_value()
    deadline = time.monotonic() + 30
    while True:  # the relay marks a row published once JetStream has stored it
        with psycopg.connect(url) as conn:
            pending = conn.execute(
                "SELECT count(*) FILTER (WHERE published_at IS NULL), count(*) FROM outbox WHERE subject = %s",
                (RECORDED_SUBJECT,),
            ).fetchone()
        assert pending is not None
        if pending[1] >= 2 and pending[0] == 0:
            break
        assert time.monotonic() < deadline, f"audit events not published: {pending}"
        time.sleep(0.1)

    # A record another service published (twice, as a redelivery would) lands in the registry's log once.
    envelope = AuditEntry(
        actor=f"frank-{uuid.uuid4().hex[:6]}",
        actor_role="user",
        action="POST /api/v1/knowledge",
        target="",
        outcome="ok",
        status=201,
        source_address="10.1.2.3",
        request_id="req-1",
    ).to_event("rag")

    async def publish_twice() -> None:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            for attempt in range(2):
                await js.publish(
                    RECORDED_SUBJECT, envelope.SerializeToString(), headers={"Nats-Msg-Id": f"{envelope.id}-{attempt}"}
                )
        finally:
            await nc.close()

    asyncio.run(publish_twice())
    actor = envelope.audit_recorded.actor
    deadline = time.monotonic() + 30
    while not (rows := _rows(reg, actor=actor)):
        assert time.monotonic() < deadline, "the rag service's record never reached the registry's log"
        time.sleep(0.1)
    time.sleep(1)  # room for the second copy to arrive (and be dropped)
    rows = _rows(reg, actor=actor)
    assert [(r["source"], r["action"], r["status"], r["source_address"], r["request_id"]) for r in rows] == [
        ("rag", "POST /api/v1/knowledge", 201, "10.1.2.3", "req-1")
    ]
