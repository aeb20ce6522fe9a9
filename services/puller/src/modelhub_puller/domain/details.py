"""What a pulled model's layers say about it: GGUF details, template, system prompt, params, licenses."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from modelhub_puller.domain import manifest as mf
from modelhub_puller.domain.gguf import GgufInfo

#: Projector or clip architectures mean the model takes images.
_VISION_ARCHITECTURES = frozenset({"clip", "mllama", "llava", "gemma3", "qwen2vl", "qwen25vl", "mistral3"})


@dataclass
class ModelDetails:
    format: str = ""
    family: str = ""
    families: list[str] = field(default_factory=list)
    parameter_size: str = ""
    quantization_level: str = ""
    architecture: str = ""
    template: str = ""
    system: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    licenses: list[str] = field(default_factory=list)
    vision: bool = False
    size_bytes: int = 0
    manifest_digest: str = ""
    model_digest: str = ""
    projector_digests: list[str] = field(default_factory=list)
    store_bucket: str = ""
    context_length: int = 0


def describe(
    manifest: mf.Manifest,
    *,
    config: dict[str, Any],
    texts: dict[str, list[str]],
    gguf: GgufInfo | None,
    bucket: str,
) -> ModelDetails:
    """Combines the config blob, the text layers (by media type, in manifest order) and the GGUF header."""
    models = manifest.layers_of(mf.MODEL)
    projectors = manifest.layers_of(mf.PROJECTOR)
    families = config.get("model_families")
    details = ModelDetails(
        format=_text(config.get("model_format")) or ("gguf" if gguf is not None else ""),
        family=_text(config.get("model_family")) or (gguf.architecture if gguf else ""),
        families=[f for f in families if isinstance(f, str)] if isinstance(families, list) else [],
        parameter_size=_text(config.get("model_type")) or (gguf.parameter_size if gguf else ""),
        quantization_level=_text(config.get("file_type")) or (gguf.quantization if gguf else ""),
        architecture=gguf.architecture if gguf else "",
        size_bytes=manifest.total_size,
        manifest_digest=manifest.digest,
        model_digest=models[0].digest if models else "",
        projector_digests=[p.digest for p in projectors],
        store_bucket=bucket,
    )
    if not details.families and details.family:
        details.families = [details.family]
    templates = texts.get(mf.TEMPLATE) or texts.get(mf.PROMPT) or []
    # Ollama's template layer is what the publisher chose; without one the GGUF's own template is the model's.
    details.template = templates[-1] if templates else (gguf.chat_template if gguf else "")
    if gguf is not None:
        details.context_length = gguf.integer(f"{gguf.architecture}.context_length") or 0
    systems = texts.get(mf.SYSTEM) or []
    details.system = systems[-1] if systems else ""
    details.licenses = list(texts.get(mf.LICENSE) or [])
    for raw in texts.get(mf.PARAMS) or []:
        details.params.update(parse_params(raw))
    details.vision = bool(projectors) or (gguf is not None and _gguf_has_vision(gguf))
    return details


def parse_params(raw: str) -> dict[str, Any]:
    """A ``.params`` layer: a JSON object of default options; anything else is ignored."""
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _gguf_has_vision(info: GgufInfo) -> bool:
    if info.architecture == "clip":
        return True
    # Models with a built-in vision tower (Ollama's newer engine) record its settings under "<arch>.vision.*".
    prefix = f"{info.architecture}.vision."
    return info.architecture in _VISION_ARCHITECTURES and any(k.startswith(prefix) for k in info.metadata)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
