"""The rules of password sign-in, from the settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LoginPolicy:
    max_failures: int
    lockout_seconds: int
    attempts_per_minute: int
    token_ttl_seconds: int
    min_password_length: int
