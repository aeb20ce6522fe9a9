"""Filters: admin-configured steps on a user's message before the model (inlet) and on the finished answer
(outlet). A model file selects them in ``meta.filterIds`` and ``meta.defaultFilterIds``; the registry holds
their configs (``RegistryClient.filter_configs``) and :class:`FilterRunner` applies them, in order.

Kinds (no user code runs):

* ``redact``: every match of ``regexes`` (the registry resolves built-in pattern names) becomes
  ``config.replacement``;
* ``block``: a match refuses the turn: :class:`FilterBlockedError` with ``config.message``;
* ``prepend`` / ``append``: ``config.text`` before / after the text, separated by a blank line;
* ``max_length``: the text cut to ``config.max_chars`` characters;
* ``webhook``: an HTTPS endpoint an admin runs, which may change or refuse the text.

Notices (:class:`FilterNotice`, shown as Warning events): ``filter_changed`` when a redact, max_length or
webhook filter changed the text (prepend and append change it on every turn by design, so they say nothing);
``filter_skipped`` for a kind this gateway does not know (a newer registry), which is skipped.

Webhook contract
----------------
``POST <config.url>`` with ``Content-Type: application/json``, ``Authorization: Bearer <config.secret>`` when
a secret is set, and the body::

    {"filter_id": "audit-hook", "stage": "inlet" | "outlet", "model_id": "...", "user_id": "...", "text": "..."}

The webhook answers HTTP 200 with a JSON object, either ``{"text": "..."}`` (the text to go on with, changed
or not) or ``{"block": "message"}`` (the turn is refused with that message). Anything else (another status, a
body that is not such an object, text longer than ``max_text_chars``, a redirect) or no whole answer within
``config.timeout_seconds`` fails closed: :class:`FilterFailedError`, and the turn does not go on. The URL is
checked against the outbound URL policy (``modelhub_common.url_policy``) before every call, and must be
``https`` unless ``allow_private_urls`` is set. Texts longer than ``max_text_chars`` are not sent.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import httpx

from modelhub_chat_gateway.errors import FilterBlockedError, FilterFailedError
from modelhub_common.url_policy import UrlNotAllowedError, check_outbound_url

__all__ = ["FilterBlockedError", "FilterFailedError", "FilterNotice", "FilterRunner", "FilterSpec", "Stage"]

logger = logging.getLogger(__name__)

Stage = Literal["inlet", "outlet"]
KNOWN_KINDS = frozenset({"redact", "block", "prepend", "append", "max_length", "webhook"})
_DIRECTIONS = frozenset({"inlet", "outlet", "both"})
# JSON escapes can make a body up to six times its characters, plus the envelope.
_ANSWER_OVERHEAD_BYTES = 64 * 1024


@dataclass(frozen=True)
class FilterSpec:
    """One filter as the registry's config routes answer it (``/api/v1/filter-configs``)."""

    id: str
    name: str
    kind: str
    direction: str
    config: Mapping[str, Any]
    #: ``redact`` and ``block``: the compiled patterns (built-in names already resolved by the registry).
    patterns: tuple[re.Pattern[str], ...] = field(default=(), compare=False)

    @classmethod
    def from_registry(cls, body: Mapping[str, Any]) -> FilterSpec:
        """Raises ValueError naming what is wrong when ``body`` is not a filter config."""
        filter_id = body.get("id")
        kind = body.get("kind")
        direction = body.get("direction")
        config = body.get("config")
        if not isinstance(filter_id, str) or not filter_id:
            raise ValueError("filter config without an id")
        if not isinstance(kind, str) or direction not in _DIRECTIONS or not isinstance(config, Mapping):
            raise ValueError(f"filter '{filter_id}': kind, direction or config missing or malformed")
        name = body.get("name")
        patterns: tuple[re.Pattern[str], ...] = ()
        if kind in ("redact", "block"):
            sources = body.get("regexes", config.get("patterns"))
            if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
                raise ValueError(f"filter '{filter_id}': regexes must be a list of strings")
            try:
                patterns = tuple(re.compile(source) for source in sources)
            except re.error as exc:
                raise ValueError(f"filter '{filter_id}': a pattern does not compile: {exc}") from exc
        return cls(
            id=filter_id,
            name=name if isinstance(name, str) and name else filter_id,
            kind=kind,
            direction=str(direction),
            config=dict(config),
            patterns=patterns,
        )

    def applies(self, stage: Stage) -> bool:
        return self.direction in (stage, "both")


@dataclass(frozen=True)
class FilterNotice:
    """Something a filter did that the user should hear about (a Warning event)."""

    filter_id: str
    code: str
    message: str


class FilterRunner:
    """Applies filters to a text. One runner per gateway; it holds no per-turn state."""

    def __init__(self, http: httpx.AsyncClient, *, allow_private_urls: bool, max_text_chars: int) -> None:
        self._http = http
        self._allow_private_urls = allow_private_urls
        self._max_text_chars = max_text_chars

    async def run(
        self, stage: Stage, filters: Sequence[FilterSpec], text: str, *, model_id: str, user_id: str
    ) -> tuple[str, list[FilterNotice]]:
        """The text after every filter for ``stage``, in order, and the notices. Raises
        :class:`FilterBlockedError` (a block filter matched, or a webhook refused) or :class:`FilterFailedError`
        (a webhook did not answer as it must); nothing after that filter runs."""
        notices: list[FilterNotice] = []
        for spec in filters:
            if not spec.applies(stage):
                continue
            before = text
            text = await self._apply(spec, stage, text, model_id=model_id, user_id=user_id, notices=notices)
            if text != before and spec.kind in ("redact", "max_length", "webhook"):
                notices.append(
                    FilterNotice(spec.id, "filter_changed", self._changed_message(spec, stage, before, text))
                )
        return text, notices

    async def _apply(
        self, spec: FilterSpec, stage: Stage, text: str, *, model_id: str, user_id: str, notices: list[FilterNotice]
    ) -> str:
        config = spec.config
        if spec.kind == "redact":
            replacement = str(config.get("replacement", "[redacted]"))
            for pattern in spec.patterns:
                # A function, so a replacement holding "\1" or "\g<0>" is inserted as written.
                text = pattern.sub(lambda _match: replacement, text)
            return text
        if spec.kind == "block":
            if any(pattern.search(text) for pattern in spec.patterns):
                message = str(config.get("message") or f"the filter '{spec.name}' refused this text")
                raise FilterBlockedError(message, filter_id=spec.id, stage=stage)
            return text
        if spec.kind == "prepend":
            return f"{config.get('text', '')}\n\n{text}"
        if spec.kind == "append":
            return f"{text}\n\n{config.get('text', '')}"
        if spec.kind == "max_length":
            limit = config.get("max_chars")
            if isinstance(limit, int) and limit >= 0 and len(text) > limit:
                return text[:limit]
            return text
        if spec.kind == "webhook":
            return await self._webhook(spec, stage, text, model_id=model_id, user_id=user_id)
        notices.append(
            FilterNotice(
                spec.id,
                "filter_skipped",
                f"filter '{spec.name}' is of a kind this gateway does not run ('{spec.kind}'), so it was skipped;"
                " ask an admin to update the chat gateway or change the filter",
            )
        )
        return text

    @staticmethod
    def _changed_message(spec: FilterSpec, stage: Stage, before: str, after: str) -> str:
        what = "your message" if stage == "inlet" else "the answer"
        if spec.kind == "max_length":
            return f"filter '{spec.name}' cut {what} to {len(after)} of {len(before)} characters"
        if spec.kind == "redact":
            return f"filter '{spec.name}' redacted parts of {what}"
        return f"filter '{spec.name}' changed {what}"

    # ---- webhooks

    def _failed(self, spec: FilterSpec, stage: Stage, problem: str) -> FilterFailedError:
        what = "your message" if stage == "inlet" else "the answer"
        logger.warning("filter webhook failed", extra={"filter_id": spec.id, "stage": stage, "problem": problem})
        return FilterFailedError(
            f"filter '{spec.name}' could not check {what}: {problem}. The turn was stopped, since the filter must"
            " pass first; try again later, or ask an admin to check the filter's webhook"
            f" (modelhub filters show {spec.id})",
            filter_id=spec.id,
            stage=stage,
        )

    async def _check_url(self, spec: FilterSpec, stage: Stage, url: str) -> None:
        if urlsplit(url).scheme != "https" and not self._allow_private_urls:
            raise self._failed(spec, stage, "its URL is not https (plain http needs allow_private_urls)")
        try:
            host = urlsplit(url).hostname or ""
            try:
                ipaddress.ip_address(host)
            except ValueError:
                # A name: resolving it blocks, so off the event loop.
                await asyncio.to_thread(check_outbound_url, url, allow_private=self._allow_private_urls)
            else:
                check_outbound_url(url, allow_private=self._allow_private_urls)
        except UrlNotAllowedError as exc:
            raise self._failed(spec, stage, f"its URL is not allowed ({exc.message})") from exc

    async def _webhook(self, spec: FilterSpec, stage: Stage, text: str, *, model_id: str, user_id: str) -> str:
        url = spec.config.get("url")
        if not isinstance(url, str) or not url:
            raise self._failed(spec, stage, "it has no URL")
        if len(text) > self._max_text_chars:
            raise self._failed(
                spec, stage, f"the text is {len(text)} characters, more than the {self._max_text_chars} it may be sent"
            )
        await self._check_url(spec, stage, url)
        timeout = spec.config.get("timeout_seconds", 5.0)
        seconds = float(timeout) if isinstance(timeout, int | float) and timeout > 0 else 5.0
        headers = {"Content-Type": "application/json"}
        secret = spec.config.get("secret")
        if isinstance(secret, str) and secret:
            headers["Authorization"] = f"Bearer {secret}"
        body = {"filter_id": spec.id, "stage": stage, "model_id": model_id, "user_id": user_id, "text": text}
        limit = self._max_text_chars * 6 + _ANSWER_OVERHEAD_BYTES
        try:
            async with asyncio.timeout(seconds):
                async with self._http.stream(
                    "POST", url, content=json.dumps(body).encode(), headers=headers, timeout=seconds
                ) as response:
                    if response.status_code != 200:
                        raise self._failed(spec, stage, f"its webhook answered HTTP {response.status_code}")
                    data = bytearray()
                    async for chunk in response.aiter_bytes():
                        data += chunk
                        if len(data) > limit:
                            raise self._failed(spec, stage, "its webhook's answer is too large")
        except TimeoutError as exc:
            raise self._failed(spec, stage, f"its webhook did not answer within {seconds:g} s") from exc
        except httpx.HTTPError as exc:
            raise self._failed(spec, stage, f"its webhook could not be reached ({type(exc).__name__})") from exc
        return self._answer(spec, stage, bytes(data))

    def _answer(self, spec: FilterSpec, stage: Stage, data: bytes) -> str:
        try:
            answer: Any = json.loads(data)
        except ValueError as exc:
            raise self._failed(spec, stage, "its webhook answered something that is not JSON") from exc
        if isinstance(answer, dict) and isinstance(answer.get("block"), str) and answer["block"]:
            raise FilterBlockedError(cast(str, answer["block"])[:4000], filter_id=spec.id, stage=stage)
        if isinstance(answer, dict) and isinstance(answer.get("text"), str):
            text = cast(str, answer["text"])
            if len(text) > self._max_text_chars:
                raise self._failed(
                    spec,
                    stage,
                    f"its webhook answered {len(text)} characters, more than the {self._max_text_chars} allowed",
                )
            return text
        raise self._failed(spec, stage, 'its webhook answered neither {"text": ...} nor {"block": ...}')
