"""Model names as users type them, normalised to ``host/namespace/model:tag``.

Accepted: ``llama3.2``, ``llama3.2:1b``, ``library/llama3.2:latest``, ``registry.ollama.ai/library/llama3.2``,
``hf.co/{user}/{repo}[:quant]``, ``huggingface.co/...`` (stored as ``hf.co``), an optional ``http://`` or
``https://`` scheme, and any of these after ``ollama run `` or ``ollama pull ``. Parsed from the right: a
``:`` is a tag separator only after the last ``/``, so ``host:port/ns/model`` works.

Every part is checked against a strict alphabet, so a parsed name can be used in URLs and object keys
without escaping and can never contain ``..`` or a ``/`` of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelhub_puller.errors import InvalidNameError

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
HF_HOST = "hf.co"
_HOST_ALIASES = {"huggingface.co": HF_HOST, "www.huggingface.co": HF_HOST}

_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_NAMESPACE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
_HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[0-9]{1,5})?$")
_PREFIX = re.compile(r"^ollama\s+(run|pull)(\s+|$)", re.IGNORECASE)
_MAX_PART = 80
_MAX_HOST = 350

_P = "[A-Za-z0-9_]"
NAME_PATTERN = (
    r"^\s*([oO][lL][lL][aA][mM][aA]\s+([rR][uU][nN]|[pP][uU][lL][lL])\s+)?"
    r"([hH][tT][tT][pP][sS]?://)?"
    rf"(({_P}[A-Za-z0-9_.-]{{0,349}}(:[0-9]{{1,5}})?/)?{_P}[A-Za-z0-9_-]{{0,79}}/)?"
    rf"{_P}[A-Za-z0-9_.-]{{0,79}}(:{_P}[A-Za-z0-9_.-]{{0,79}})?\s*$"
)
"""What :func:`parse_model_name` accepts, as a JSON-schema pattern for the API documents: ``[ollama run|pull]
[http(s)://][[host[:port]/]namespace/]model[:tag]``, each part starting with a letter, digit or ``_``."""


@dataclass(frozen=True)
class ModelName:
    host: str
    namespace: str
    model: str
    tag: str
    scheme: str = "https"

    @property
    def full(self) -> str:
        """``host/namespace/model:tag``: the key that identifies a pull."""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def repository(self) -> str:
        """``namespace/model``, as it appears in registry URLs."""
        return f"{self.namespace}/{self.model}"

    @property
    def base_model_id(self) -> str:
        """The id the registry gives the pulled model (docs/model-store.md).

        Ollama's own library drops host and namespace (``llama3.2:latest``), another namespace on Ollama's
        registry keeps it (``user/model:tag``), and any other host keeps both (``hf.co/user/repo:Q4_K_M``).
        """
        if self.host == DEFAULT_HOST:
            if self.namespace == DEFAULT_NAMESPACE:
                return f"{self.model}:{self.tag}"
            return f"{self.namespace}/{self.model}:{self.tag}"
        return self.full

    @property
    def ollama_name(self) -> str:
        """The name to hand an Ollama server's ``/api/pull``."""
        return self.base_model_id

    @property
    def manifest_key(self) -> str:
        """Object key of the manifest in the model store."""
        return f"manifests/{self.host}/{self.namespace}/{self.model}/{self.tag}"


def parse_model_name(text: str) -> ModelName:
    """Parses what a user typed; raises :class:`InvalidNameError` saying which part is wrong."""
    raw = " ".join(text.split())
    raw = _PREFIX.sub("", raw)
    if not raw:
        raise InvalidNameError("the model name is empty")
    if " " in raw:
        raise InvalidNameError(f"{raw!r}: a model name has no spaces")
    scheme = "https"
    lowered = raw.lower()
    for candidate in ("https://", "http://"):
        if lowered.startswith(candidate):
            scheme = candidate.removesuffix("://")
            raw = raw[len(candidate) :]
            break
    if "://" in raw:
        raise InvalidNameError(f"{text.strip()!r}: only http:// and https:// may start a model name")
    if "@" in raw:
        raise InvalidNameError(f"{raw!r}: pulling by digest (@sha256:...) is not supported; use a tag")

    slash = raw.rfind("/")
    colon = raw.rfind(":")
    tag = DEFAULT_TAG
    if colon > slash:
        raw, tag = raw[:colon], raw[colon + 1 :]
        if not tag:
            raise InvalidNameError(f"{text.strip()!r}: the tag after ':' is empty")
    parts = raw.split("/")
    if any(p == "" for p in parts):
        raise InvalidNameError(f"{text.strip()!r}: empty part between slashes")
    if len(parts) > 3:
        raise InvalidNameError(f"{text.strip()!r}: too many parts; expected [host/][namespace/]model[:tag]")
    host, namespace = DEFAULT_HOST, DEFAULT_NAMESPACE
    if len(parts) == 3:
        host, namespace, model = parts
    elif len(parts) == 2:
        namespace, model = parts
    else:
        (model,) = parts

    host = host.lower()
    host = _HOST_ALIASES.get(host, host)
    if len(host) > _MAX_HOST or not _HOST.match(host):
        raise InvalidNameError(f"host {host!r} is not a valid host name")
    _check_part("namespace", namespace, _NAMESPACE, "letters, digits, '_' and '-'")
    _check_part("model", model, _PART, "letters, digits, '_', '-' and '.'")
    _check_part("tag", tag, _PART, "letters, digits, '_', '-' and '.'")
    return ModelName(host=host, namespace=namespace, model=model, tag=tag, scheme=scheme)


def _check_part(what: str, value: str, pattern: re.Pattern[str], alphabet: str) -> None:
    if len(value) > _MAX_PART:
        raise InvalidNameError(f"{what} {value[:20]!r}...: longer than {_MAX_PART} characters")
    if not pattern.match(value):
        raise InvalidNameError(
            f"{what} {value!r} is not valid: it must start with a letter, digit or '_' and contain only {alphabet}"
        )
