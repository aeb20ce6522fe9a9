"""Lists the models an Ollama or OpenAI-compatible server offers."""

from __future__ import annotations

from typing import Any

import httpx

from modelhub_registry.domain.base_model import BaseModelRecord, ConnectionType
from modelhub_registry.errors import UpstreamError


def _openai_models_url(url: str) -> str:
    base = url.rstrip("/")
    return f"{base}/models" if base.endswith("/v1") else f"{base}/v1/models"


def _ollama_record(item: dict[str, Any], connection_id: str) -> BaseModelRecord | None:
    name = item.get("name") or item.get("model")
    if not isinstance(name, str) or not name:
        return None
    raw_details = item.get("details")
    details: dict[str, Any] = dict(raw_details) if isinstance(raw_details, dict) else {}
    details.update(size=item.get("size"), digest=item.get("digest"))
    families = details.get("families") or []
    vision = any(f in ("clip", "mllama") for f in families) if isinstance(families, list) else False
    return BaseModelRecord(
        id=name,
        name=name,
        source="ollama",
        connection_id=connection_id,
        capabilities={"vision": vision},
        details={k: v for k, v in details.items() if v is not None},
    )


def _openai_record(item: dict[str, Any], connection_id: str) -> BaseModelRecord | None:
    model_id = item.get("id")
    if not isinstance(model_id, str) or not model_id:
        return None
    details = {k: item[k] for k in ("owned_by", "created") if k in item}
    return BaseModelRecord(
        id=model_id,
        name=model_id,
        source="openai",
        connection_id=connection_id,
        capabilities={},
        details=details,
    )


async def list_connection_models(
    client: httpx.AsyncClient, *, type_: ConnectionType, url: str, api_key: str | None, connection_id: str
) -> list[BaseModelRecord]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    target = f"{url.rstrip('/')}/api/tags" if type_ == "ollama" else _openai_models_url(url)
    try:
        response = await client.get(target, headers=headers)
    except httpx.HTTPError as exc:
        raise UpstreamError(f"cannot reach {type_} connection at {url}: {type(exc).__name__}") from exc
    if response.status_code != 200:
        raise UpstreamError(f"{type_} connection at {url} answered HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError as exc:
        raise UpstreamError(f"{type_} connection at {url} did not answer JSON") from exc
    items = body.get("models" if type_ == "ollama" else "data") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise UpstreamError(f"{type_} connection at {url} answered an unexpected shape")
    build = _ollama_record if type_ == "ollama" else _openai_record
    records = [build(item, connection_id) for item in items if isinstance(item, dict)]
    return [r for r in records if r is not None]
