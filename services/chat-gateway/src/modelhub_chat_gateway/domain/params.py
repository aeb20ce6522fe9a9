"""Model-file parameters (Open WebUI's names) translated for each backend.

The registry merges parameters by its documented precedence; this module only renames and filters them.
Keys a backend does not understand are not sent (Open WebUI-only keys such as ``function_calling`` never
are), and ``system`` is applied by the gateway as a message, never passed through as a parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Ollama: everything goes into ``options``; max_tokens is called num_predict there.
_OLLAMA_OPTIONS = (
    "num_ctx",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "stop",
    "repeat_penalty",
    "repeat_last_n",
    "presence_penalty",
    "frequency_penalty",
    "num_predict",
    "mirostat",
    "mirostat_eta",
    "mirostat_tau",
    "tfs_z",
    "typical_p",
    "num_keep",
)
# OpenAI-compatible servers: top-level fields of the official API only (others reject unknown fields).
_OPENAI_FIELDS = ("temperature", "top_p", "max_tokens", "seed", "stop", "presence_penalty", "frequency_penalty")
# llama-cpp-python's create_completion.
_LLAMA_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "max_tokens",
    "seed",
    "stop",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
    "typical_p",
    "mirostat_mode",
    "mirostat_tau",
    "mirostat_eta",
)


def _stop_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return None


def to_ollama_options(params: Mapping[str, Any]) -> dict[str, Any]:
    options = {key: params[key] for key in _OLLAMA_OPTIONS if params.get(key) is not None}
    if params.get("max_tokens") is not None and "num_predict" not in options:
        options["num_predict"] = params["max_tokens"]
    if "stop" in options:
        options["stop"] = _stop_list(options["stop"])
    return options


def to_openai_fields(params: Mapping[str, Any]) -> dict[str, Any]:
    fields = {key: params[key] for key in _OPENAI_FIELDS if params.get(key) is not None}
    if params.get("num_predict") is not None and "max_tokens" not in fields:
        fields["max_tokens"] = params["num_predict"]
    if "stop" in fields:
        fields["stop"] = (_stop_list(fields["stop"]) or [])[:4]
    return fields


def to_llama_kwargs(params: Mapping[str, Any]) -> dict[str, Any]:
    kwargs = {key: params[key] for key in _LLAMA_FIELDS if params.get(key) is not None}
    if params.get("num_predict") is not None and "max_tokens" not in kwargs:
        kwargs["max_tokens"] = params["num_predict"]
    if params.get("mirostat") is not None and "mirostat_mode" not in kwargs:
        kwargs["mirostat_mode"] = params["mirostat"]
    if "stop" in kwargs:
        kwargs["stop"] = _stop_list(kwargs["stop"])
    return kwargs


def int_param(params: Mapping[str, Any], key: str) -> int | None:
    value = params.get(key)
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
