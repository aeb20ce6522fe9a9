"""One audit log for the whole stack: what a user does (or is refused) in the rag service and the puller ends
up in the registry's audit log, through their AuditRecorded events on NATS."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx


def _wait_for_rows(registry: str, admin: dict[str, str], want: int, **query: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    while True:
        response = httpx.get(f"{registry}/api/v1/audit", params={"limit": 100, **query}, headers=admin)
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()["items"]
        if len(rows) >= want:
            return rows
        assert time.monotonic() < deadline, f"only {len(rows)} of {want} audit rows arrived: {rows}"
        time.sleep(0.2)


def test_rag_changes_and_refusals_reach_the_registrys_audit_log(
    registry_service: str, rag_service: str, make_token: Callable[..., str]
) -> None:
    def auth(subject: str, role: str = "user") -> dict[str, str]:
        return {"Authorization": f"Bearer {make_token(subject=subject, role=role)}"}

    owner, stranger = f"gina-{time.monotonic_ns()}", f"hank-{time.monotonic_ns()}"
    created = httpx.post(f"{rag_service}/api/v1/knowledge", json={"name": "Gina's notes"}, headers=auth(owner))
    assert created.status_code == 201, created.text
    knowledge_id = created.json()["id"]
    refused = httpx.delete(f"{rag_service}/api/v1/knowledge/{knowledge_id}", headers=auth(stranger))
    assert refused.status_code in (403, 404), refused.text

    admin = auth("root", "admin")
    mine = _wait_for_rows(registry_service, admin, 1, actor=owner, source="rag")
    theirs = _wait_for_rows(registry_service, admin, 1, actor=stranger, source="rag")
    assert [(r["action"], r["outcome"], r["status"]) for r in mine] == [("POST /api/v1/knowledge", "ok", 201)]
    assert [(r["action"], r["target"], r["outcome"]) for r in theirs] == [
        ("DELETE /api/v1/knowledge/{knowledge_id}", knowledge_id, "failed" if refused.status_code == 404 else "denied")
    ]
    assert all(r["request_id"] and r["source_address"] for r in mine + theirs)
