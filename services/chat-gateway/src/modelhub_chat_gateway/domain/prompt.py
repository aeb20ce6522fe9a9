"""Builds what a model is sent: the rendered system prompt, the retrieved knowledge and the history, trimmed
to the model's context length (oldest turns first) instead of letting the backend drop them silently.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from modelhub_chat_gateway.domain.chat_types import Citation, PromptMessage
from modelhub_chat_gateway.errors import ContextTooLongError

_VARIABLE = re.compile(r"\{\{\s*([A-Z_]+)\s*\}\}")
# A conservative estimate (about 3 bytes per token, plus per-message framing) so that trimming errs on the
# side of keeping the request inside the window; images are counted as a fixed block.
_BYTES_PER_TOKEN = 3
_MESSAGE_OVERHEAD = 4
_IMAGE_TOKENS = 768


@dataclass(frozen=True)
class PromptUser:
    """Who the variables describe."""

    name: str
    role: str


def render_system(template: str, user: PromptUser, now: datetime) -> str:
    """Replaces ``{{ USER_NAME }}``, ``{{ CURRENT_DATE }}`` and friends; unknown variables are left as written."""
    values = {
        "USER_NAME": user.name,
        "USER_ROLE": user.role,
        "CURRENT_DATE": now.strftime("%Y-%m-%d"),
        "CURRENT_TIME": now.strftime("%H:%M:%S"),
        "CURRENT_DATETIME": now.strftime("%Y-%m-%d %H:%M:%S"),
        "CURRENT_WEEKDAY": now.strftime("%A"),
        "CURRENT_TIMEZONE": now.strftime("%Z") or "UTC",
    }
    return _VARIABLE.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def knowledge_block(citations: Sequence[Citation]) -> str:
    """The retrieved sources, numbered so that answers can refer to them as [1], [2] ..."""
    lines = ["Use the following sources to answer. Cite them as [n] where you use them.", ""]
    for number, citation in enumerate(citations, start=1):
        where = f", page {citation.page}" if citation.page else ""
        lines.append(f"[{number}] {citation.file_name}{where}:")
        lines.append(citation.text.strip())
        lines.append("")
    return "\n".join(lines).rstrip()


def estimate_tokens(message: PromptMessage) -> int:
    size = len(message.content.encode()) + sum(len(c.name) + len(c.arguments.encode()) for c in message.tool_calls)
    text_tokens = -(-size // _BYTES_PER_TOKEN)
    return text_tokens + _MESSAGE_OVERHEAD + _IMAGE_TOKENS * len(message.images)


@dataclass(frozen=True)
class FittedPrompt:
    messages: tuple[PromptMessage, ...]
    dropped_messages: int
    estimated_tokens: int


def fit_to_context(
    system: Sequence[PromptMessage],
    history: Sequence[PromptMessage],
    current: PromptMessage,
    *,
    num_ctx: int,
    reserve_for_answer: int,
) -> FittedPrompt:
    """Keeps the system messages and the current message; drops the oldest history until the estimate fits.

    History is dropped a whole turn at a time (a user message and what answered it), so what remains still
    starts with a user message. Raises :class:`ContextTooLongError` if even the system prompt and the current
    message do not fit.
    """
    budget = num_ctx - min(reserve_for_answer, num_ctx // 2)
    fixed = sum(estimate_tokens(m) for m in system) + estimate_tokens(current)
    if fixed > budget:
        raise ContextTooLongError(
            f"the system prompt and this message need about {fixed} tokens, more than the "
            f"{budget} available in num_ctx={num_ctx} after keeping {num_ctx - budget} for the answer"
        )
    kept = list(history)
    total = fixed + sum(estimate_tokens(m) for m in kept)
    dropped = 0
    while kept and total > budget:
        # Drop the oldest message, then anything up to the next user message (its answers).
        total -= estimate_tokens(kept.pop(0))
        dropped += 1
        while kept and kept[0].role != "user":
            total -= estimate_tokens(kept.pop(0))
            dropped += 1
    return FittedPrompt((*system, *kept, current), dropped, total)
