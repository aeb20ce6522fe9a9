"""The audit log's admin route (``GET /api/v1/audit``), and the registry's reads that are audited like changes.
What is recorded and when: :mod:`modelhub_common.audit`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from modelhub_common.errors import DependencyError
from modelhub_common.webapp import AdminPrincipal
from modelhub_registry.service_layer.audit import AuditLog, AuditQuery

router = APIRouter(prefix="/api/v1", tags=["audit"])

#: Reads that hand out what an attacker wants: whole exports, secrets, the audit log itself.
SENSITIVE_READS = frozenset(
    {
        "/api/v1/models/export",
        "/api/v1/models/{model_id:path}/export",
        "/api/v1/connections/{connection_id}/credentials",
        "/api/v1/tool-servers/{server_id}/credentials",
        "/api/v1/filters/{filter_id}/config",
        "/api/v1/filter-configs",
        "/api/v1/audit",
    }
)


@router.get("/audit", summary="The audit log, newest first (admins only)")
async def read_audit_log(
    request: Request,
    principal: AdminPrincipal,
    actor: str | None = None,
    action: Annotated[str | None, Query(description="e.g. 'DELETE /api/v1/models/{model_id:path}'")] = None,
    target: str | None = None,
    source: Annotated[str | None, Query(description="the service that wrote the row, e.g. 'rag'")] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    audit: AuditLog | None = getattr(request.app.state, "audit", None)
    if audit is None:
        raise DependencyError("the audit log is not open yet; try again in a moment")
    rows, next_cursor = await audit.query(
        AuditQuery(
            actor=actor,
            action=action,
            target=target,
            source=source,
            since=since,
            until=until,
            limit=limit,
            cursor=cursor,
        )
    )
    items = [{**row, "at": row["at"].isoformat()} for row in rows]
    return {"items": items, "next_cursor": next_cursor}
