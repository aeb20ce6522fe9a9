"""A pull with target ``ollama``: drives the configured Ollama server and relays its progress.

Ollama reports one line per blob (``pulling <12 hex>`` with ``digest``, ``total``, ``completed``); the
overall totals Open WebUI lacks are the sums over the blobs seen so far. Cancelling the pull task leaves
the ``async for`` early, which closes the upstream stream and makes Ollama stop.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from modelhub_puller.adapters.ollama_client import OllamaClient
from modelhub_puller.domain.details import ModelDetails, parse_params
from modelhub_puller.domain.names import parse_model_name
from modelhub_puller.domain.pull import LayerProgress, LayerState, PullJob
from modelhub_puller.errors import UpstreamError
from modelhub_puller.service_layer.progress import PullTracker

logger = logging.getLogger(__name__)

_PARAM_LINE = re.compile(r"^(\S+)\s+(.+)$")


class OllamaPuller:
    def __init__(self, client: OllamaClient, *, insecure_hosts: frozenset[str]) -> None:
        self._client = client
        self._insecure = insecure_hosts

    async def run(self, job: PullJob, tracker: PullTracker) -> ModelDetails:
        name = parse_model_name(job.model)
        layers: dict[str, LayerProgress] = {}
        succeeded = False
        async for line in self._client.pull(name.ollama_name, insecure=name.host in self._insecure):
            status = str(line.get("status") or "")
            digest = line.get("digest")
            if isinstance(digest, str) and digest:
                total = _int(line.get("total"))
                layer = layers.get(digest)
                if layer is None:
                    layer = LayerProgress(digest=digest, media_type="", total_bytes=total, state=LayerState.DOWNLOADING)
                    layers[digest] = layer
                    tracker.set_layers(list(layers.values()))
                layer.total_bytes = max(layer.total_bytes, total)
                done = _int(line.get("completed"))
                tracker.at_least(digest, done)
                if total and done >= total:
                    tracker.set_layer_state(digest, LayerState.DOWNLOADED)
            if status:
                tracker.set_status(status)
            if status == "success":
                succeeded = True
        if not succeeded:
            raise UpstreamError(f"Ollama's pull of {name.ollama_name} ended without 'success'")
        for digest in layers:
            tracker.set_layer_state(digest, LayerState.DOWNLOADED)
        return await self._details(name.ollama_name, sum(layer.total_bytes for layer in layers.values()))

    async def _details(self, model: str, size: int) -> ModelDetails:
        try:
            shown = await self._client.show(model)
        except UpstreamError as exc:
            logger.warning("could not read the pulled model's details", extra={"model": model, "error": exc.message})
            return ModelDetails(size_bytes=size)
        info: dict[str, Any] = shown.get("details") if isinstance(shown.get("details"), dict) else {}  # type: ignore[assignment]
        families = info.get("families")
        model_info = shown.get("model_info") if isinstance(shown.get("model_info"), dict) else {}
        capabilities = shown.get("capabilities") if isinstance(shown.get("capabilities"), list) else []
        return ModelDetails(
            format=str(info.get("format") or ""),
            family=str(info.get("family") or ""),
            families=[str(f) for f in families] if isinstance(families, list) else [],
            parameter_size=str(info.get("parameter_size") or ""),
            quantization_level=str(info.get("quantization_level") or ""),
            architecture=str((model_info or {}).get("general.architecture") or ""),
            template=str(shown.get("template") or ""),
            system=str(shown.get("system") or ""),
            params=_parameters(str(shown.get("parameters") or "")),
            licenses=[str(shown["license"])] if shown.get("license") else [],
            vision="vision" in (capabilities or []),
            size_bytes=size,
        )


def _parameters(text: str) -> dict[str, Any]:
    """``/api/show``'s ``parameters`` text (``stop "<|eot|>"`` per line) as a dict; repeated keys make lists."""
    if text.strip().startswith("{"):
        return parse_params(text)
    result: dict[str, Any] = {}
    for line in text.splitlines():
        match = _PARAM_LINE.match(line.strip())
        if not match:
            continue
        key, raw = match.group(1), match.group(2).strip()
        value: Any = raw.strip('"')
        for convert in (int, float):
            try:
                value = convert(raw)
                break
            except ValueError:
                continue
        if key in result:
            existing = result[key]
            result[key] = [*existing, value] if isinstance(existing, list) else [existing, value]
        elif key == "stop":
            result[key] = [value]
        else:
            result[key] = value
    return result


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
