"""Health endpoints: ``/healthz`` (the process is alive, no I/O) and ``/readyz`` (dependencies reachable)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fastapi import APIRouter
from fastapi.responses import JSONResponse

logger = logging.getLogger(__name__)

Check = Callable[[], Awaitable[None]]


@dataclass
class Readiness:
    """Named dependency checks; ready only when the service has started and every check passes."""

    timeout_seconds: float = 2.0
    checks: dict[str, Check] = field(default_factory=dict)
    started: bool = False
    stopping: bool = False

    def add(self, name: str, check: Check) -> None:
        self.checks[name] = check

    async def run(self) -> tuple[bool, dict[str, str]]:
        if self.stopping:
            return False, {"service": "stopping"}
        if not self.started:
            return False, {"service": "starting"}
        names = list(self.checks)
        results = await asyncio.gather(
            *(asyncio.wait_for(self.checks[n](), self.timeout_seconds) for n in names), return_exceptions=True
        )
        report: dict[str, str] = {}
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                reason = "timed out" if isinstance(result, TimeoutError) else type(result).__name__
                report[name] = f"failing: {reason}"
                logger.warning("readiness check failed", extra={"check": name, "error": repr(result)})
            else:
                report[name] = "ok"
        return all(v == "ok" for v in report.values()), report


def health_router(readiness: Readiness) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="Readiness: every dependency is reachable")
    async def readyz() -> JSONResponse:
        ready, report = await readiness.run()
        return JSONResponse({"ready": ready, "checks": report}, status_code=200 if ready else 503)

    return router
