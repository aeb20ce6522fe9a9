"""The base of every modelhub error.

Each service defines one subclass of :class:`ModelhubError` as its own base, and adapters wrap third-party
errors in those (``raise StoreError(...) from exc``). Entrypoints translate them to HTTP/gRPC statuses or
to ack/nak/term decisions; nothing else does.
"""

from __future__ import annotations


class ModelhubError(Exception):
    """Base of all modelhub errors. ``code`` is stable and safe to show to clients."""

    code: str = "internal"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ConfigurationError(ModelhubError):
    """Settings are missing or contradict each other."""

    code = "configuration"


class DependencyError(ModelhubError):
    """An infrastructure dependency (NATS, Postgres, S3) failed or is unreachable."""

    code = "dependency_unavailable"


class AuthError(ModelhubError):
    """A bearer token is missing, malformed, expired or signed with another key."""

    code = "unauthenticated"


class PermissionDeniedError(ModelhubError):
    """The caller is authenticated but may not do this."""

    code = "permission_denied"


class TransientError(ModelhubError):
    """A failure worth retrying later (the consumer loop naks with back-off)."""

    code = "transient"


class PermanentError(ModelhubError):
    """A failure that retrying cannot fix (the consumer loop terms and dead-letters the message)."""

    code = "permanent"


def error_body(code: str, message: str, details: object = None) -> dict[str, object]:
    """The one error shape of every HTTP API: ``{"error": {"code", "message", "details"}}``."""
    body: dict[str, object] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return {"error": body}
