"""The audit trail: a middleware that records each audited request once its answer is known, and the admin
route that reads the log (``GET /api/v1/audit``). What is audited and why: see
:mod:`modelhub_registry.service_layer.audit`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelhub_common.auth import Principal
from modelhub_common.errors import DependencyError
from modelhub_common.webapp import PRINCIPAL_SCOPE_KEY, AdminPrincipal
from modelhub_registry.service_layer.audit import AuditEntry, AuditLog, AuditQuery, outcome_of

router = APIRouter(prefix="/api/v1", tags=["audit"])

_CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
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


class AuditMiddleware:
    """Records audited requests in ``app.state.audit`` (an :class:`AuditLog`, set when the app starts)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith("/api/"):
            await self.app(scope, receive, send)
            return
        status = 500
        request_id = ""

        async def capture(message: Message) -> None:
            nonlocal status, request_id
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers", ()):
                    if name.lower() == b"x-request-id":
                        request_id = value.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            await self._record(scope, status, request_id)

    async def _record(self, scope: Scope, status: int, request_id: str) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None)
        method = scope.get("method", "")
        if not isinstance(template, str) or not (method in _CHANGES or template in SENSITIVE_READS):
            return
        audit: AuditLog | None = getattr(scope["app"].state, "audit", None)
        if audit is None:
            return
        principal: Principal | None = scope.get(PRINCIPAL_SCOPE_KEY)
        params = scope.get("path_params") or {}
        client = scope.get("client")
        await audit.record(
            AuditEntry(
                actor=principal.subject if principal else "anonymous",
                actor_role=principal.role if principal else "",
                action=f"{method} {template}",
                target="/".join(str(v) for v in params.values()),
                outcome=outcome_of(status),
                status=status,
                source_address=client[0] if client else "",
                request_id=request_id,
            )
        )


@router.get("/audit", summary="The audit log, newest first (admins only)")
async def read_audit_log(
    request: Request,
    principal: AdminPrincipal,
    actor: str | None = None,
    action: Annotated[str | None, Query(description="e.g. 'DELETE /api/v1/models/{model_id:path}'")] = None,
    target: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    audit: AuditLog | None = getattr(request.app.state, "audit", None)
    if audit is None:
        raise DependencyError("the audit log is not open yet; try again in a moment")
    rows, next_cursor = await audit.query(
        AuditQuery(actor=actor, action=action, target=target, since=since, until=until, limit=limit, cursor=cursor)
    )
    items = [{**row, "at": row["at"].isoformat()} for row in rows]
    return {"items": items, "next_cursor": next_cursor}
