"""Filters: admin-configured steps the chat gateway runs on a user's message (inlet) or on the finished answer
(outlet). Model files select them in ``meta.filterIds`` and ``meta.defaultFilterIds``.

No user code runs: a filter is one of a few declarative kinds (``redact``, ``block``, ``prepend``, ``append``,
``max_length``) or a ``webhook`` an admin points at an HTTPS endpoint. Each kind's ``config`` is validated
strictly here (unknown keys refused, regular expressions compiled, sizes bounded by the registry's settings).

``redact`` and ``block`` take ``patterns``: a regular expression (Python syntax), or the name of a built-in
pattern (:data:`BUILTIN_PATTERNS`); to match a built-in's name literally, write it as a group, ``(?:email)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

FILTER_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
FilterKind = Literal["redact", "block", "prepend", "append", "max_length", "webhook"]
FilterDirection = Literal["inlet", "outlet", "both"]
FILTER_KINDS: tuple[str, ...] = get_args(FilterKind)

#: Named patterns admins may use instead of writing a regular expression.
BUILTIN_PATTERNS: dict[str, str] = {
    "email": r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}",
    # Secret-looking tokens: provider key prefixes, then long opaque strings after key-ish words.
    "api_key": (
        r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}"
        r"|\bgh[pousr]_[A-Za-z0-9]{20,}"
        r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"
        r"|\bAKIA[0-9A-Z]{16}\b"
        r"|\b(?i:api[_-]?key|secret|token|password)\b\s{0,3}[:=]\s{0,3}\S{8,}"
    ),
    # 13 to 19 digits, in groups separated by single spaces or dashes.
    "credit_card": r"\b\d(?:[ -]?\d){12,18}\b",
}

# A quantified group that itself holds a quantifier, e.g. (a+)+ or (\w*)*: the shape of catastrophic
# backtracking in a backtracking engine such as Python's. Cheap to spot; it refuses a few harmless patterns
# too, which an admin can rewrite without the nesting.
_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*(?:[+*]|\{\d+,\d*\})(?:[^()\\]|\\.)*\)\s*(?:[+*]|\{\d+,\d*\})")


@dataclass(frozen=True)
class FilterLimits:
    """Bounds from the registry's settings."""

    max_filters: int = 200
    max_patterns: int = 32
    max_pattern_chars: int = 500
    max_text_chars: int = 4000
    max_cut_chars: int = 1_000_000
    min_timeout_seconds: float = 0.5
    max_timeout_seconds: float = 30.0


class FilterProblem(ValueError):
    """``config`` (or the kind or direction) is not valid; ``field`` says where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _PatternConfig(_Config):
    patterns: list[str] = Field(min_length=1)


class RedactConfig(_PatternConfig):
    replacement: str = "[redacted]"


class BlockConfig(_PatternConfig):
    message: str = Field(min_length=1)


class TextConfig(_Config):
    text: str = Field(min_length=1)


class MaxLengthConfig(_Config):
    max_chars: int = Field(ge=1)


class WebhookConfig(_Config):
    url: str = Field(min_length=1, max_length=2048)
    timeout_seconds: float = 5.0
    secret: str | None = Field(None, min_length=1, max_length=8192)


_CONFIGS: dict[str, type[_Config]] = {
    "redact": RedactConfig,
    "block": BlockConfig,
    "prepend": TextConfig,
    "append": TextConfig,
    "max_length": MaxLengthConfig,
    "webhook": WebhookConfig,
}


def pattern_source(pattern: str) -> str:
    """The regular expression a ``patterns`` entry stands for (a built-in's, or the entry itself)."""
    return BUILTIN_PATTERNS.get(pattern, pattern)


def _check_pattern(field: str, pattern: str, limits: FilterLimits) -> None:
    if pattern in BUILTIN_PATTERNS:
        return
    if not pattern:
        raise FilterProblem(field, "must not be empty")
    if len(pattern) > limits.max_pattern_chars:
        raise FilterProblem(
            field,
            f"is {len(pattern)} characters; the limit is {limits.max_pattern_chars} (setting max_filter_pattern_chars)",
        )
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise FilterProblem(field, f"is not a valid regular expression: {exc}") from exc
    if _NESTED_QUANTIFIER.search(pattern):
        raise FilterProblem(
            field,
            "nests a quantifier inside a quantified group (like (a+)+), which can take exponential time;"
            " write it without the nesting",
        )
    if compiled.match(""):
        raise FilterProblem(field, "matches the empty text, so it would match everywhere")


def _check_text(field: str, text: str, limits: FilterLimits) -> None:
    if len(text) > limits.max_text_chars:
        raise FilterProblem(
            field, f"is {len(text)} characters; the limit is {limits.max_text_chars} (setting max_filter_text_chars)"
        )


def validate_config(kind: str, config: Any, limits: FilterLimits) -> dict[str, Any]:
    """``config`` checked for ``kind`` and normalised (defaults filled in). The webhook URL is not checked
    here: that needs the URL policy, which resolves host names (the service layer does it)."""
    model = _CONFIGS.get(kind)
    if model is None:
        raise FilterProblem("kind", f"must be one of {', '.join(FILTER_KINDS)}")
    if not isinstance(config, dict):
        raise FilterProblem("config", f"must be an object with the settings of a '{kind}' filter")
    try:
        parsed = model.model_validate(config)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        message = "is not a setting of this kind" if error["type"] == "extra_forbidden" else error["msg"]
        raise FilterProblem(f"config.{where}" if where else "config", message) from exc
    if isinstance(parsed, _PatternConfig):
        if len(parsed.patterns) > limits.max_patterns:
            raise FilterProblem(
                "config.patterns",
                f"has {len(parsed.patterns)} patterns; the limit is {limits.max_patterns}"
                " (setting max_filter_patterns)",
            )
        for index, pattern in enumerate(parsed.patterns):
            _check_pattern(f"config.patterns.{index}", pattern, limits)
    if isinstance(parsed, RedactConfig):
        _check_text("config.replacement", parsed.replacement, limits)
    if isinstance(parsed, BlockConfig):
        _check_text("config.message", parsed.message, limits)
    if isinstance(parsed, TextConfig):
        _check_text("config.text", parsed.text, limits)
    if isinstance(parsed, MaxLengthConfig) and parsed.max_chars > limits.max_cut_chars:
        raise FilterProblem(
            "config.max_chars", f"must be at most {limits.max_cut_chars} (setting max_filter_cut_chars)"
        )
    if isinstance(parsed, WebhookConfig):
        low, high = limits.min_timeout_seconds, limits.max_timeout_seconds
        if not low <= parsed.timeout_seconds <= high:
            raise FilterProblem("config.timeout_seconds", f"must be between {low:g} and {high:g}")
    return parsed.model_dump(exclude_none=True)


class Filter(BaseModel):
    """A stored filter. A webhook's ``config.secret`` is held here but only :meth:`config_json` shows it."""

    id: str
    name: str
    description: str = ""
    kind: FilterKind
    direction: FilterDirection
    config: dict[str, Any]
    enabled: bool = True
    created_at: datetime
    updated_at: datetime
    version: int = 1

    @property
    def has_secret(self) -> bool:
        return bool(self.config.get("secret"))

    def admin_json(self) -> dict[str, Any]:
        """Everything but the webhook secret, whose presence is shown as ``has_secret``."""
        body = self.model_dump(mode="json")
        body["config"] = {key: value for key, value in self.config.items() if key != "secret"}
        body["has_secret"] = self.has_secret
        return body

    def config_json(self) -> dict[str, Any]:
        """What the chat gateway runs: the whole config (secret included) and, for ``redact`` and ``block``,
        ``regexes``: the regular expression each pattern stands for, built-in names resolved."""
        body = self.model_dump(mode="json", include={"id", "name", "kind", "direction", "enabled", "version"})
        body["config"] = dict(self.config)
        if self.kind in ("redact", "block"):
            body["regexes"] = [pattern_source(p) for p in self.config.get("patterns", [])]
        return body
