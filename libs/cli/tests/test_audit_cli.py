"""``modelhub audit list`` against a real registry."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import LiveRegistry


def body_rows(table: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in table.splitlines() if line.startswith("│")]


def test_the_audit_log_as_a_table_filtered_and_for_admins_only(
    live_registry: LiveRegistry, make_token: Callable[..., str]
) -> None:
    with live_registry.api() as api:
        body = {"id": "audited", "name": "Audited", "base_model_id": "llama3.1:8b"}
        assert api.post("/api/v1/models", json=body).status_code == 201
        assert api.delete("/api/v1/models/audited").status_code in (200, 204)

    rows = body_rows(live_registry.ok("audit", "list", "--target", "audited"))
    assert [(r[3], r[4], r[5]) for r in rows] == [("DELETE /api/v1/models/{model_id:path}", "audited", "ok")]
    page = json.loads(live_registry.ok("audit", "list", "--limit", "1", "--json"))
    assert len(page["items"]) == 1 and page["next_cursor"]
    refused = live_registry.fails("audit", "list", token=make_token("someone", "user"))
    assert "admin" in refused.lower()
