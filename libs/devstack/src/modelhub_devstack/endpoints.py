"""Plain values describing how to reach a server, handed to tests and services."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class S3Endpoint:
    """An S3-compatible API: ``endpoint`` is ``host:port`` without scheme, as the MinIO SDK wants it."""

    endpoint: str
    access_key: str
    secret_key: str
    secure: bool = False

    def __repr__(self) -> str:
        # Keep the secret out of pytest failure output and logs.
        return f"S3Endpoint(endpoint={self.endpoint!r}, access_key={self.access_key!r}, secure={self.secure})"
