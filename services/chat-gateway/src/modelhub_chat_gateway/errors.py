"""The chat gateway's errors. Entrypoints translate them to gRPC statuses and HTTP answers; nothing else does.

``code`` is stable and shown to clients; ``message`` is a sentence a user can act on.
"""

from __future__ import annotations

from modelhub_common.errors import ModelhubError

__all__ = [
    "BackendError",
    "BackendTimeoutError",
    "ContextTooLongError",
    "ConversationNotFoundError",
    "FilterBlockedError",
    "FilterFailedError",
    "GatewayError",
    "InvalidRequestError",
    "ModelAccessDeniedError",
    "ModelNotFoundError",
    "ModelUnusableError",
    "RegistryUnavailableError",
    "RetrievalError",
    "VisionNotSupportedError",
]


class GatewayError(ModelhubError):
    """Base of every chat-gateway error."""

    code = "gateway_error"


class InvalidRequestError(GatewayError):
    code = "invalid_request"


class ConversationNotFoundError(GatewayError):
    code = "conversation_not_found"


class ModelNotFoundError(GatewayError):
    """The model does not exist, or the caller cannot read it (the registry does not say which)."""

    code = "model_not_found"


class ModelAccessDeniedError(GatewayError):
    """The caller can read the model but not a model in its chain; the message names that one."""

    code = "permission_denied"

    def __init__(self, message: str, *, model_id: str) -> None:
        super().__init__(message)
        self.model_id = model_id


class ModelUnusableError(GatewayError):
    """Disabled, base missing or unavailable, or no backend can run it."""

    code = "model_unusable"


class RegistryUnavailableError(GatewayError):
    code = "registry_unavailable"


class VisionNotSupportedError(GatewayError):
    code = "vision_not_supported"


class ContextTooLongError(GatewayError):
    code = "context_too_long"


class RetrievalError(GatewayError):
    code = "retrieval_failed"


class BackendError(GatewayError):
    """A model backend failed: unreachable, refused the request, or broke off the stream."""

    code = "backend_error"


class BackendTimeoutError(BackendError):
    """``code`` is ``connect_timeout``, ``first_token_timeout`` or ``idle_timeout``."""

    code = "backend_timeout"


class FilterBlockedError(GatewayError):
    """A filter refused the text (a block filter matched, or a webhook said so); ``message`` is the filter's."""

    code = "filter_blocked"

    def __init__(self, message: str, *, filter_id: str, stage: str) -> None:
        super().__init__(message)
        self.filter_id = filter_id
        self.stage = stage


class FilterFailedError(GatewayError):
    """A webhook filter failed or timed out; filters fail closed, so the turn stops (the message says which)."""

    code = "filter_failed"

    def __init__(self, message: str, *, filter_id: str, stage: str) -> None:
        super().__init__(message)
        self.filter_id = filter_id
        self.stage = stage
