"""A stored conversation as the chat page replays it: the turns along the selected branch, each with its
models' sibling answers and which one the branch goes through."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode


def context_mode(message: dict[str, Any]) -> str:
    """``per_model`` or ``shared``, as the chat form names the gateway's ContextMode."""
    return "per_model" if message.get("context_mode") == "CONTEXT_MODE_PER_MODEL" else "shared"


def image_path(conversation_id: str, message_id: str, n: int) -> str:
    """The console's own URL of a stored image (the gateway's URLs point at the object store)."""
    return "/chat/image?" + urlencode({"conversation": conversation_id, "message": message_id, "n": n})


def replay(conversation: dict[str, Any]) -> list[dict[str, Any]]:
    """``[{"text", "images", "context_mode", "columns": [{"model_id", "answers": [{"id", "text", "status",
    "note", "citations", "tool_steps"}], "index"}]}]``; ``images`` are the console's URLs of the turn's images,
    ``citations`` the knowledge chunks the answer was given (``{file_name, text, score, page}``) and
    ``tool_steps`` the tools it ran (``{call: {id, tool, arguments, server_id, step}, result: {id, ok,
    content, error_code, duration_seconds, truncated}}``)."""
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
                    "tool_steps": [tool_step(t) for t in child.get("tool_steps", []) if isinstance(t, dict)],
                }
            )
        for column in columns.values():
            column.setdefault("index", len(column["answers"]) - 1)
        images = [
            image_path(conversation.get("id", ""), message_id, n) for n in range(len(message.get("image_urls", [])))
        ]
        turns.append(
            {
                "text": message.get("content", ""),
                "images": images,
                "context_mode": context_mode(message),
                "columns": list(columns.values()),
            }
        )
    return turns


def tool_step(step: dict[str, Any]) -> dict[str, Any]:
    """One stored tool step as the live ToolCall / ToolResult events carry it (zero fields filled in)."""
    call = step.get("call") or {}
    result = step.get("result") or {}
    return {
        "call": {
            "id": str(call.get("id", "")),
            "tool": str(call.get("tool", "")),
            "arguments": str(call.get("arguments", "")),
            "server_id": str(call.get("server_id", "")),
            "step": int(call.get("step") or 0),
        },
        "result": {
            "id": str(result.get("id", "")),
            "ok": bool(result.get("ok")),
            "content": str(result.get("content", "")),
            "error_code": str(result.get("error_code", "")),
            "duration_seconds": float(result.get("duration_seconds") or 0),
            "truncated": bool(result.get("truncated")),
        }
        if result
        else None,
    }


def cited(citation: dict[str, Any]) -> dict[str, Any]:
    """What the transcript shows of one citation (the gateway's ``Citation`` as JSON, zero fields left out)."""
    return {
        "file_name": str(citation.get("file_name") or citation.get("file_id") or ""),
        "text": str(citation.get("text", "")),
        "score": float(citation.get("score") or 0),
        "page": int(citation.get("page") or 0),
    }
