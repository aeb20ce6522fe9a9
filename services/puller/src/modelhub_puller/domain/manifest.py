"""Registry manifests (Docker v2 / OCI JSON with Ollama layer media types), parsed and checked.

Nothing from a manifest is trusted as a path: digests must match ``sha256:<64 hex>`` and become object keys
only through :func:`blob_key`; media types and sizes are plain values.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from modelhub_puller.errors import InvalidManifestError

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
ACCEPT_MANIFEST = f"{MANIFEST_V2}, {OCI_MANIFEST}"

OLLAMA_PREFIX = "application/vnd.ollama.image."
MODEL = OLLAMA_PREFIX + "model"
PROJECTOR = OLLAMA_PREFIX + "projector"
ADAPTER = OLLAMA_PREFIX + "adapter"
TEMPLATE = OLLAMA_PREFIX + "template"
PROMPT = OLLAMA_PREFIX + "prompt"  # the legacy name of a template layer
SYSTEM = OLLAMA_PREFIX + "system"
PARAMS = OLLAMA_PREFIX + "params"
MESSAGES = OLLAMA_PREFIX + "messages"
LICENSE = OLLAMA_PREFIX + "license"
EMBED = OLLAMA_PREFIX + "embed"

#: Small text/JSON layers the puller reads back to describe the model.
TEXT_LAYERS = frozenset({TEMPLATE, PROMPT, SYSTEM, PARAMS, MESSAGES, LICENSE})

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+_/-]{0,254}$")


def check_digest(value: object) -> str:
    if not isinstance(value, str) or not _DIGEST.match(value):
        raise InvalidManifestError(f"invalid digest {str(value)[:80]!r}: expected sha256:<64 hex digits>")
    return value


def blob_key(digest: str) -> str:
    """``blobs/sha256/<hex>``: the only way a digest becomes an object key."""
    return "blobs/sha256/" + check_digest(digest).removeprefix("sha256:")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Layer:
    media_type: str
    digest: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Manifest:
    raw: bytes
    digest: str
    media_type: str
    config: Layer
    layers: tuple[Layer, ...]

    @property
    def blobs(self) -> tuple[Layer, ...]:
        """Config first, then layers, without repeats (a layer may be listed twice)."""
        seen: set[str] = set()
        result: list[Layer] = []
        for layer in (self.config, *self.layers):
            if layer.digest not in seen:
                seen.add(layer.digest)
                result.append(layer)
        return tuple(result)

    @property
    def total_size(self) -> int:
        return sum(layer.size for layer in self.blobs)

    def layers_of(self, media_type: str) -> list[Layer]:
        return [layer for layer in self.layers if layer.media_type == media_type]


def parse_manifest(raw: bytes) -> Manifest:
    """Parses and checks a manifest; raises :class:`InvalidManifestError` naming the problem."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidManifestError(f"the manifest is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidManifestError("the manifest is not a JSON object")
    if body.get("schemaVersion") != 2:
        raise InvalidManifestError(f"unsupported manifest schemaVersion {body.get('schemaVersion')!r}")
    media_type = body.get("mediaType", MANIFEST_V2)
    if media_type not in (MANIFEST_V2, OCI_MANIFEST):
        raise InvalidManifestError(f"unsupported manifest media type {str(media_type)[:100]!r}")
    config = _layer(body.get("config"), "config")
    layers_raw = body.get("layers")
    if not isinstance(layers_raw, list) or not layers_raw:
        raise InvalidManifestError("the manifest has no layers")
    if len(layers_raw) > 1000:
        raise InvalidManifestError("the manifest lists more than 1000 layers")
    layers = tuple(_layer(item, f"layers[{i}]") for i, item in enumerate(layers_raw))
    return Manifest(raw=raw, digest=sha256_digest(raw), media_type=media_type, config=config, layers=layers)


def _layer(value: object, where: str) -> Layer:
    if not isinstance(value, dict):
        raise InvalidManifestError(f"{where} is not an object")
    media_type = value.get("mediaType")
    if not isinstance(media_type, str) or not _MEDIA_TYPE.match(media_type):
        raise InvalidManifestError(f"{where}.mediaType is missing or invalid")
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidManifestError(f"{where}.size must be a non-negative integer")
    try:
        digest = check_digest(value.get("digest"))
    except InvalidManifestError as exc:
        raise InvalidManifestError(f"{where}: {exc.message}") from exc
    return Layer(media_type=media_type, digest=digest, size=size)


def build_manifest(config: Layer, layers: list[Layer]) -> bytes:
    """A Docker v2 manifest as Ollama writes it (stable key order, so equal content gives equal digests)."""
    body = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_V2,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    return json.dumps(body, separators=(",", ":")).encode()
