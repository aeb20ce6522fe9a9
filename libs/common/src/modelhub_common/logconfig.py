"""JSON logging, configured once by each entrypoint."""

from __future__ import annotations

import logging
import sys
from typing import Any

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

from modelhub_common.request_ids import current_request_id

_REDACTED = "[redacted]"
_SECRET_KEYS = ("token", "secret", "password", "authorization", "access_key", "secret_key", "database_url")


class RedactSecretsFilter(logging.Filter):
    """Masks values of ``extra`` fields whose names look like secrets, so they never reach log storage."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in list(record.__dict__.items()):
            if value and isinstance(value, str) and any(s in key.lower() for s in _SECRET_KEYS):
                record.__dict__[key] = _REDACTED
        return True


class RequestContextFilter(logging.Filter):
    """Puts ``request_id`` (see :mod:`modelhub_common.request_ids`) and, while a trace is being recorded,
    ``trace_id``/``span_id`` on every record, so each JSON line can be joined to its request and trace."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = current_request_id.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
        span = trace.get_current_span().get_span_context()
        if span.is_valid and not hasattr(record, "trace_id"):
            record.trace_id = format(span.trace_id, "032x")
            record.span_id = format(span.span_id, "016x")
        return True


def configure_logging(service: str, level: str = "INFO", *, stream: Any = None) -> None:
    """Sends every log record as one JSON object per line to stderr, tagged with the service name."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            static_fields={"service": service},
        )
    )
    handler.addFilter(RedactSecretsFilter())
    handler.addFilter(RequestContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Access logs repeat what our own request logging says; keep them at warning.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
