"""``modelhub status``: the health of each service, as a table."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from modelhub_cli.endpoints import Endpoints

SERVICES: tuple[tuple[str, str], ...] = (
    ("registry", "MODELHUB_REGISTRY_URL"),
    ("puller", "MODELHUB_PULLER_URL"),
    ("rag", "MODELHUB_RAG_URL"),
    ("chat-gateway", "MODELHUB_GATEWAY_HTTP"),
)
#: Checked only where configured (a deployment may run without the web console).
OPTIONAL_SERVICES: tuple[tuple[str, str], ...] = (("console", "MODELHUB_CONSOLE_URL"),)


@dataclass(frozen=True)
class ServiceHealth:
    name: str
    url: str | None
    ready: bool
    detail: str


def check_service(name: str, url: str | None, timeout: float = 3.0) -> ServiceHealth:
    if not url:
        return ServiceHealth(name, None, False, "no URL configured")
    try:
        response = httpx.get(f"{url.rstrip('/')}/readyz", timeout=timeout)
    except httpx.HTTPError as exc:
        return ServiceHealth(name, url, False, f"unreachable ({type(exc).__name__})")
    try:
        body = response.json()
    except ValueError:
        body = {}
    checks = body.get("checks", {}) if isinstance(body, dict) else {}
    failing = [f"{k}: {v}" for k, v in checks.items() if v != "ok"]
    if response.status_code == 200:
        return ServiceHealth(name, url, True, ", ".join(f"{k} ok" for k in checks) or "ready")
    return ServiceHealth(name, url, False, "; ".join(failing) or f"HTTP {response.status_code}")


def check_all(endpoints: Endpoints) -> list[ServiceHealth]:
    services = SERVICES + tuple(s for s in OPTIONAL_SERVICES if endpoints.get(s[1]))
    with ThreadPoolExecutor(max_workers=len(services)) as pool:
        return list(pool.map(lambda s: check_service(s[0], endpoints.get(s[1])), services))
