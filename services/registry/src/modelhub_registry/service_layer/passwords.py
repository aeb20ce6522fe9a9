"""Password sign-in: argon2id hashes, a rate limit per source address and a lock-out per account.

A successful sign-in returns the same bearer token ``POST /tokens`` issues, so every service verifies it as it
verifies any other. The lock-out lives in PostgreSQL (every replica sees it); the per-address rate limit is kept
in each process, so with N replicas an address gets up to N times the limit.
"""

from __future__ import annotations

import time
from collections import deque
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from psycopg_pool import AsyncConnectionPool

from modelhub_registry.adapters.directory_repository import DirectoryRepository
from modelhub_registry.adapters.passwords_repository import PasswordRepository
from modelhub_registry.domain.login import LoginPolicy
from modelhub_registry.errors import BadCredentialsError, InvalidModelError, NotFoundError, TooManyAttemptsError
from modelhub_registry.service_layer.directory import DirectoryService

_BAD_CREDENTIALS = "wrong username or password"


class AttemptWindow:
    """Sign-in attempts per source address in the last minute (a sliding window, in this process)."""

    def __init__(self, per_minute: int, *, max_addresses: int = 100_000) -> None:
        self.per_minute = per_minute
        self.max_addresses = max_addresses
        self._seen: dict[str, deque[float]] = {}

    def admit(self, address: str, now: float | None = None) -> int:
        """0 when the attempt may go on, else how many seconds until it may."""
        moment = time.monotonic() if now is None else now
        if len(self._seen) >= self.max_addresses:
            self._seen = {a: q for a, q in self._seen.items() if q and q[-1] > moment - 60}
        window = self._seen.setdefault(address, deque())
        while window and window[0] <= moment - 60:
            window.popleft()
        if len(window) >= self.per_minute:
            return max(1, int(window[0] + 60 - moment) + 1)
        window.append(moment)
        return 0


class PasswordService:
    def __init__(self, pool: AsyncConnectionPool, directory: DirectoryService, policy: LoginPolicy) -> None:
        self.pool = pool
        self.directory = directory
        self.policy = policy
        self.hasher = PasswordHasher()
        self.users = DirectoryRepository()
        self.repo = PasswordRepository()
        self.attempts = AttemptWindow(policy.attempts_per_minute)
        # Verified against when the user has no password, so that an unknown name costs as much as a known one.
        self._decoy = self.hasher.hash("decoy password that matches nothing")

    async def set_password(self, user_id: str, password: str) -> None:
        if len(password) < self.policy.min_password_length:
            raise InvalidModelError(
                f"password: must be at least {self.policy.min_password_length} characters",
                details=[{"field": "password", "message": f"at least {self.policy.min_password_length} characters"}],
            )
        password_hash = self.hasher.hash(password)
        async with self.pool.connection() as conn, conn.transaction():
            if await self.users.user(conn, user_id) is None:
                raise NotFoundError(f"user '{user_id}' does not exist")
            await self.repo.set(conn, user_id, password_hash)

    async def login(self, username: str, password: str, *, source_address: str) -> tuple[str, datetime]:
        wait = self.attempts.admit(source_address)
        if wait:
            raise TooManyAttemptsError(
                f"too many sign-in attempts from this address; try again in {wait} s", retry_after_seconds=wait
            )
        now = datetime.now(UTC)
        # Failures are committed before the refusal is raised (raising inside the transaction would undo them).
        refusal: Exception | None = None
        async with self.pool.connection() as conn, conn.transaction():
            stored = await self.repo.get_for_update(conn, username)
            if stored is None:
                self._matches(self._decoy, password)
                refusal = BadCredentialsError(_BAD_CREDENTIALS)
            elif stored.locked_until is not None and stored.locked_until > now:
                wait = int((stored.locked_until - now).total_seconds()) + 1
                refusal = TooManyAttemptsError(
                    f"this account is locked after too many failed sign-ins; try again in {wait} s or ask an admin"
                    " to set a new password",
                    retry_after_seconds=wait,
                    code="account_locked",
                )
            elif not self._matches(stored.password_hash, password):
                failures = stored.failed_attempts + 1
                locked = None
                if failures >= self.policy.max_failures:
                    locked = now + timedelta(seconds=self.policy.lockout_seconds)
                    failures = 0
                await self.repo.record_failure(conn, username, failed_attempts=failures, locked_until=locked)
                refusal = BadCredentialsError(_BAD_CREDENTIALS)
            else:
                needs_rehash = self.hasher.check_needs_rehash(stored.password_hash)
                await self.repo.record_success(conn, username, self.hasher.hash(password) if needs_rehash else None)
        if refusal is not None:
            raise refusal
        return await self.directory.issue(username, self.policy.token_ttl_seconds)

    def _matches(self, password_hash: str, password: str) -> bool:
        try:
            return self.hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
