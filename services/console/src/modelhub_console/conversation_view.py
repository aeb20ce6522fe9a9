"""A stored conversation as the chat page replays it: the turns along the selected branch, each with its
models' sibling answers and which one the branch goes through."""

from __future__ import annotations

from typing import Any


def replay(conversation: dict[str, Any]) -> list[dict[str, Any]]:
    """``[{"text", "columns": [{"model_id", "answers": [{"id", "text", "status", "note", "citations"}],
    "index"}]}]``; ``citations`` are the knowledge chunks the answer was given (``{file_name, text, score,
    page}``)."""
    messages = {m["id"]: m for m in conversation.get("messages", [])}
    path: list[str] = []
    current = conversation.get("current_message_id", "")
    while current and current in messages and current not in path:
        path.append(current)
        current = messages[current].get("parent_id", "")
    on_path = set(path)
    turns: list[dict[str, Any]] = []
    for message_id in reversed(path):
        message = messages[message_id]
        if message.get("role") != "user":
            continue
        children = [messages[c] for c in message.get("children_ids", []) if c in messages]
        columns: dict[str, dict[str, Any]] = {}
        for child in children:
            if child.get("role") != "assistant":
                continue
            column = columns.setdefault(
                child.get("model_id", ""), {"model_id": child.get("model_id", ""), "answers": []}
            )
            if child["id"] in on_path:
                column["index"] = len(column["answers"])
            column["answers"].append(
                {
                    "id": child["id"],
                    "text": child.get("content", ""),
                    "status": "error" if child.get("error_code") else "done",
                    "note": child.get("error_message", ""),
                    "citations": [cited(c) for c in child.get("citations", []) if isinstance(c, dict)],
                }
            )
        for column in columns.values():
            column.setdefault("index", len(column["answers"]) - 1)
        turns.append({"text": message.get("content", ""), "columns": list(columns.values())})
    return turns


def cited(citation: dict[str, Any]) -> dict[str, Any]:
    """What the transcript shows of one citation (the gateway's ``Citation`` as JSON, zero fields left out)."""
    return {
        "file_name": str(citation.get("file_name") or citation.get("file_id") or ""),
        "text": str(citation.get("text", "")),
        "score": float(citation.get("score") or 0),
        "page": int(citation.get("page") or 0),
    }
