"""The input boundary every HTTP service shares: JSON bodies that cannot be stored are refused before any route.

PostgreSQL cannot hold a NUL character in text or JSON, and UTF-8 cannot encode an unpaired surrogate
(``\\ud800``): both would otherwise reach the database driver and come back as a 500 or a dropped connection.
A JSON body is refused here, with the field that holds the bad character named:

* not valid UTF-8 → 400 ``invalid_body``;
* a string (a value or a key) with ``\\u0000`` or a lone surrogate → 422 ``invalid_request``.

The check costs one UTF-8 decode of the body; the body is parsed here only when its text contains such an
escape, which ordinary requests never do. The body is then handed to the route unchanged.

The request target is checked the same way, for every method: a path (``/api/v1/models/%00``) or a query
parameter holding such a character → 422 naming ``path`` or the parameter; a query string whose
percent-escapes are not UTF-8 → 400.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelhub_common.errors import error_body

_SUSPECT = re.compile(r"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def openai_refusal(shared: dict[str, Any]) -> dict[str, Any]:
    """A refusal in the shared shape (``{"error": {"code", "message", "details"?}}``) in OpenAI's shape."""
    error = shared["error"]
    details = error.get("details") or []
    return {
        "error": {
            "message": error["message"],
            "type": "invalid_request_error",
            "param": (details[0]["field"] or None) if details else None,
            "code": error["code"],
        }
    }


def unstorable_text(value: str) -> str | None:
    """Why ``value`` cannot be stored as text, or None when it can."""
    if "\x00" in value:
        return "contains a NUL character (\\u0000)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains an unpaired surrogate (\\ud800–\\udfff), which is not valid Unicode"
    return None


def find_unstorable(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(field path, problem) for each string in a parsed JSON value that cannot be stored."""
    if isinstance(value, str):
        problem = unstorable_text(value)
        if problem:
            yield path or "body", problem
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            problem = unstorable_text(key)
            if problem:
                yield (path or "body"), f"has a key that {problem}"
                where = f"{path}[key]" if path else "[key]"
            yield from find_unstorable(item, where)
    elif isinstance(value, list):
        for n, item in enumerate(value):
            yield from find_unstorable(item, f"{path}[{n}]")


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return b"json" in value.lower()
    return False


class RequestBoundary:
    """ASGI middleware: checks JSON request bodies as described above, then replays them to the app."""

    def __init__(self, app: ASGIApp, *, openai_prefixes: tuple[str, ...] = ()) -> None:
        """``openai_prefixes``: paths of an OpenAI-compatible API, whose clients get refusals in OpenAI's
        error shape (status 400) instead of the shared one."""
        self.app = app
        self.openai_prefixes = openai_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (refused := self._shaped(scope, _check_target(scope))) is not None:
            await refused(scope, receive, send)
            return
        if scope["type"] != "http" or scope.get("method") not in _BODY_METHODS or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        refusal = self._shaped(scope, _check(body))
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _shaped(self, scope: Scope, refusal: JSONResponse | None) -> JSONResponse | None:
        path = scope.get("path", "")
        if refusal is None or not self.openai_prefixes or not str(path).startswith(self.openai_prefixes):
            return refusal
        return JSONResponse(openai_refusal(json.loads(bytes(refusal.body))), status_code=400)


def _check_target(scope: Scope) -> JSONResponse | None:
    problems: list[dict[str, str]] = []
    path = scope.get("path", "")
    if isinstance(path, str) and (problem := unstorable_text(path)):
        problems.append({"field": "path", "message": problem})
    query = scope.get("query_string", b"")
    if query:
        try:
            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            message = "the query string's percent-escapes are not UTF-8; encode parameters as UTF-8"
            return JSONResponse(error_body("invalid_request", message), status_code=400)
        for name, value in pairs:
            if problem := unstorable_text(name) or unstorable_text(value):
                problems.append({"field": f"query.{name.replace(chr(0), '?')}", "message": problem})
    if not problems:
        return None
    summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5])
    return JSONResponse(
        error_body("invalid_request", f"{summary}; remove it and send the request again", problems), status_code=422
    )


def _check(body: bytes) -> JSONResponse | None:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        message = f"the request body is not valid UTF-8 (byte {exc.start}); send JSON encoded as UTF-8"
        return JSONResponse(error_body("invalid_body", message), status_code=400)
    if not _SUSPECT.search(text):
        return None
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        return None  # the route's own parser reports what is wrong with it
    problems = [{"field": field, "message": problem} for field, problem in find_unstorable(parsed)]
    if not problems:
        return None
    summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5])
    return JSONResponse(
        error_body("invalid_request", f"{summary}; remove it and send the request again", problems), status_code=422
    )
