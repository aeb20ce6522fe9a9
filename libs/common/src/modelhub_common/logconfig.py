"""JSON logging, configured once by each entrypoint."""

from __future__ import annotations

import logging
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

_REDACTED = "[redacted]"
_SECRET_KEYS = ("token", "secret", "password", "authorization", "access_key", "secret_key", "database_url")


class RedactSecretsFilter(logging.Filter):
    """Masks values of ``extra`` fields whose names look like secrets, so they never reach log storage."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in list(record.__dict__.items()):
            if value and isinstance(value, str) and any(s in key.lower() for s in _SECRET_KEYS):
                record.__dict__[key] = _REDACTED
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
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Access logs repeat what our own request logging says; keep them at warning.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
