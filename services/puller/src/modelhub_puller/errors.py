"""The puller's errors: one base, stable codes, and the HTTP status the REST entrypoint answers with.

``retryable`` tells the work-queue entrypoint whether a failed pull is worth another delivery (a registry
that timed out) or is final (a digest mismatch, a model that does not exist).
"""

from __future__ import annotations

from typing import Any

from modelhub_common.errors import ModelhubError


class PullerError(ModelhubError):
    code = "puller_error"
    http_status = 500
    retryable = False

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message, code=code)
        self.details = details


class InvalidNameError(PullerError):
    """A model name users typed cannot be parsed; the message says which part is wrong."""

    code = "invalid_name"
    http_status = 422


class InvalidRequestError(PullerError):
    code = "invalid_request"
    http_status = 422


class HostNotAllowedError(PullerError):
    code = "host_not_allowed"
    http_status = 403


class ForbiddenError(PullerError):
    code = "permission_denied"
    http_status = 403


class NotFoundError(PullerError):
    code = "not_found"
    http_status = 404


class ConflictError(PullerError):
    code = "conflict"
    http_status = 409


class ModelNotFoundError(PullerError):
    """The registry says the model (or tag) does not exist."""

    code = "model_not_found"
    http_status = 404


class UpstreamError(PullerError):
    """A registry, CDN or Ollama server answered badly; retrying may help."""

    code = "upstream_error"
    http_status = 502
    retryable = True


class UpstreamRejectedError(PullerError):
    """A registry refused the request with a reason (hf.co: 'not a valid quantization scheme')."""

    code = "upstream_rejected"
    http_status = 502


class UpstreamAuthError(PullerError):
    code = "upstream_unauthorized"
    http_status = 502


class InvalidManifestError(PullerError):
    code = "invalid_manifest"
    http_status = 502


class DigestMismatchError(PullerError):
    code = "digest_mismatch"
    http_status = 502


class TooLargeError(PullerError):
    code = "too_large"
    http_status = 413


class InsufficientSpaceError(PullerError):
    code = "insufficient_space"
    http_status = 507


class StoreError(PullerError):
    """The object store failed; retrying may help."""

    code = "store_unavailable"
    http_status = 503
    retryable = True


class UploadLostError(StoreError):
    """The S3 multipart upload a resumed download relied on no longer exists."""

    code = "upload_lost"


class PullCancelledError(PullerError):
    code = "cancelled"
    http_status = 409


class OllamaNotConfiguredError(PullerError):
    """A valid request this deployment cannot serve (no Ollama server configured): 409, not 422."""

    code = "ollama_not_configured"
    http_status = 409
