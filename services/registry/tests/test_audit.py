"""The audit log: changes, denials and security-relevant reads leave one row each, readable by admins only."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg_pool import AsyncConnectionPool

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

    rows = _rows(reg)
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

    carol = _rows(reg, actor="carol")
    assert len(carol) == 6 and carol[0]["action"] == "GET /api/v1/audit" and carol[0]["outcome"] == "denied"
    creates = _rows(reg, action="POST /api/v1/models", actor="carol")
    assert len(creates) == 5
    pages: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"actor": "carol", "limit": 2, **({"cursor": cursor} if cursor else {})}
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
