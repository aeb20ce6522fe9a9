"""The CLI's errors. Commands raise these; one handler prints them in red and exits 1 (no traceback).

``CliError`` is a problem found on this side (no URL, an unreadable file); ``ApiError`` is the registry's
answer (or its absence), carrying the server's message, the HTTP status and a hint of what to do next.
"""

from __future__ import annotations

from typing import Any


class CliError(Exception):
    """Something the user can fix; ``hint`` says how."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ApiError(CliError):
    """The registry refused the request, or could not be reached (``status`` 0)."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str = "",
        details: Any = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.code = code
        self.details = details

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status})" if self.status else self.message
