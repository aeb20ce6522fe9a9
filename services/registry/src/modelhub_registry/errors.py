"""The registry's errors. Each carries the HTTP status the REST entrypoint answers with."""

from __future__ import annotations

from typing import Any

from modelhub_common.errors import ModelhubError


class RegistryError(ModelhubError):
    code = "registry_error"
    http_status = 500

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message, code=code)
        self.details = details


class NotFoundError(RegistryError):
    code = "not_found"
    http_status = 404


class ForbiddenError(RegistryError):
    code = "permission_denied"
    http_status = 403


class ConflictError(RegistryError):
    code = "conflict"
    http_status = 409


class InvalidModelError(RegistryError):
    """The request is well-formed JSON but breaks a rule; ``details`` lists ``{field, message}``."""

    code = "invalid_model"
    http_status = 422


class TooLargeError(RegistryError):
    code = "too_large"
    http_status = 413


class UnsupportedMediaError(RegistryError):
    code = "unsupported_media_type"
    http_status = 415


class UpstreamError(RegistryError):
    """A connection (Ollama, OpenAI-compatible server) answered badly or not at all."""

    code = "upstream_error"
    http_status = 502


class BadCredentialsError(RegistryError):
    """A sign-in with a username and password that do not match (which of the two is never said)."""

    code = "bad_credentials"
    http_status = 401


class TooManyAttemptsError(RegistryError):
    """Sign-in refused for a while: too many attempts from one address, or the account is locked out."""

    code = "too_many_attempts"
    http_status = 429

    def __init__(self, message: str, *, retry_after_seconds: int, code: str | None = None) -> None:
        super().__init__(message, code=code, details={"retry_after_seconds": retry_after_seconds})
        self.retry_after_seconds = retry_after_seconds
