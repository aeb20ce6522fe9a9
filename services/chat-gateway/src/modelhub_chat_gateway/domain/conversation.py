"""Conversations are trees of messages: a user message's children are the answers of one turn (one per model,
plus regenerated siblings); the selected branch is the path from the root to ``current_message_id``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from modelhub_chat_gateway.domain.chat_types import Citation, ContextMode, Usage
from modelhub_chat_gateway.domain.tools import ToolStepRecord

USABLE_STATUSES = frozenset({"done", "cancelled"})


@dataclass
class StoredImage:
    key: str
    mime_type: str


@dataclass
class StoredMessage:
    id: str
    conversation_id: str
    parent_id: str | None
    role: str
    content: str = ""
    model_id: str = ""
    images: list[StoredImage] = field(default_factory=list)
    status: str = "done"
    usage: Usage = field(default_factory=Usage)
    finish_reason: str = ""
    error_code: str = ""
    error_message: str = ""
    time_to_first_token: float = 0.0
    total_seconds: float = 0.0
    citations: list[Citation] = field(default_factory=list)
    context_mode: ContextMode = ContextMode.SHARED
    tool_steps: list[ToolStepRecord] = field(default_factory=list)
    #: Set on an action's result (role "action"): which of the model's actions produced it.
    action_id: str = ""
    created_at: datetime | None = None
    seq: int = 0


@dataclass
class ConversationRecord:
    id: str
    owner_id: str
    title: str
    current_message_id: str | None
    created_at: datetime
    updated_at: datetime


class MessageTree:
    """Navigation over the messages of one conversation (children in creation order)."""

    def __init__(self, messages: Iterable[StoredMessage]) -> None:
        ordered = sorted(messages, key=lambda m: m.seq)
        self.by_id = {m.id: m for m in ordered}
        self.children: dict[str | None, list[StoredMessage]] = {}
        for message in ordered:
            self.children.setdefault(message.parent_id, []).append(message)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self.by_id

    def path_to(self, message_id: str | None) -> list[StoredMessage]:
        """Root first, ``message_id`` last."""
        path: list[StoredMessage] = []
        seen: set[str] = set()
        current = message_id
        while current is not None and current in self.by_id and current not in seen:
            seen.add(current)
            message = self.by_id[current]
            path.append(message)
            current = message.parent_id
        path.reverse()
        return path

    def latest_leaf(self, message_id: str) -> str:
        """Follows the newest child down to a leaf: what the arrows show after switching to ``message_id``."""
        current = message_id
        # Action results hang off an answer without continuing the conversation.
        while kids := [k for k in self.children.get(current, []) if k.role != "action"]:
            current = kids[-1].id
        return current

    def own_answer(self, user_message_id: str, model_id: str) -> StoredMessage | None:
        """``model_id``'s newest usable answer to a user message."""
        answers = [
            m
            for m in self.children.get(user_message_id, [])
            if m.role == "assistant" and m.model_id == model_id and _usable(m)
        ]
        return answers[-1] if answers else None


def _usable(message: StoredMessage) -> bool:
    return message.status in USABLE_STATUSES and bool(message.content)


def history_for(tree: MessageTree, parent_id: str | None, model_id: str, mode: ContextMode) -> list[StoredMessage]:
    """The earlier messages ``model_id`` is shown when answering a message whose parent is ``parent_id``.

    ``SHARED`` (Open WebUI's behaviour): the selected branch, so every model sees the answer that is currently
    selected at each turn. ``PER_MODEL``: at each turn the model sees its own answer when it gave one; for turns
    it did not take part in (the user switched models) it sees the selected answer, so switching keeps context.
    Failed answers and empty ones are left out in both modes.
    """
    history: list[StoredMessage] = []
    for message in tree.path_to(parent_id):
        if message.role == "action":
            continue
        if message.role == "user":
            history.append(message)
            continue
        chosen: StoredMessage | None = message
        if mode is ContextMode.PER_MODEL and message.model_id != model_id and message.parent_id is not None:
            chosen = tree.own_answer(message.parent_id, model_id) or message
        if chosen is not None and _usable(chosen):
            history.append(chosen)
    return history


def title_from(text: str, limit: int = 60) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"
