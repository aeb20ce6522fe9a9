"""Model backends: each streams one answer from an upstream server or an in-process model."""

from modelhub_chat_gateway.adapters.backends.base import ChatBackend

__all__ = ["ChatBackend"]
