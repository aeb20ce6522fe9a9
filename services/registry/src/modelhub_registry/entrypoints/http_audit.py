"""The audit log's admin route (``GET /api/v1/audit``), and the registry's reads that are audited like changes.
What is recorded and when: :mod:`modelhub_common.audit`."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BeforeValidator

from modelhub_common.errors import DependencyError
from modelhub_common.webapp import AdminPrincipal
from modelhub_registry.service_layer.audit import AuditLog, AuditQuery

router = APIRouter(prefix="/api/v1", tags=["audit"])

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: object) -> object:
    """What the document says (``format: date-time``): pydantic alone also takes a number as Unix seconds
    (``until=0.5``), a bare date and a time without its offset."""
    if isinstance(value, str) and not _RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time with its offset, e.g. 2026-12-01T00:00:00Z")
    return value


Moment = Annotated[datetime | None, BeforeValidator(_rfc3339), Query()]

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
    since: Moment = None,
    until: Moment = None,
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
