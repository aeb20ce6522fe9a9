"""The console's errors: what a backend service refused (its status, stable code, message and field details)."""

from __future__ import annotations

from typing import Any

from modelhub_common.errors import ModelhubError


class ConsoleError(ModelhubError):
    code = "console_error"


class BackendError(ConsoleError):
    """A backend answered with an error; ``status`` and ``details`` are its own (``details`` of a 422 lists
    ``{field, message}``)."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.details = details

    def field_errors(self) -> dict[str, str]:
        """``{field: message}`` from a 422's details, for showing next to each form field."""
        found: dict[str, str] = {}
        if isinstance(self.details, list):
            for item in self.details:
                if isinstance(item, dict) and isinstance(item.get("field"), str):
                    found.setdefault(item["field"], str(item.get("message", "")))
        return found


class BackendUnavailableError(ConsoleError):
    code = "backend_unavailable"


class SignInRequiredError(ConsoleError):
    """No session, an expired one, or a token the backends no longer accept."""

    code = "sign_in_required"


class CsrfError(ConsoleError):
    code = "csrf_failed"
