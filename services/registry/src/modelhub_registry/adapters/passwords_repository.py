"""Password hashes and sign-in failures in PostgreSQL (table ``user_passwords``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row


@dataclass(frozen=True)
class StoredPassword:
    user_id: str
    password_hash: str
    failed_attempts: int
    locked_until: datetime | None


class PasswordRepository:
    async def set(self, conn: AsyncConnection[Any], user_id: str, password_hash: str) -> None:
        """Stores a new hash and clears any failures and lock-out (an admin's reset unlocks)."""
        await conn.execute(
            "INSERT INTO user_passwords (user_id, password_hash) VALUES (%s, %s)"
            " ON CONFLICT (user_id) DO UPDATE SET password_hash = EXCLUDED.password_hash,"
            " failed_attempts = 0, locked_until = NULL, updated_at = now()",
            (user_id, password_hash),
        )

    async def get_for_update(self, conn: AsyncConnection[Any], user_id: str) -> StoredPassword | None:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "SELECT user_id, password_hash, failed_attempts, locked_until FROM user_passwords"
                " WHERE user_id = %s FOR UPDATE",
                (user_id,),
            )
            row = await cur.fetchone()
        return StoredPassword(**row) if row else None

    async def record_failure(
        self, conn: AsyncConnection[Any], user_id: str, *, failed_attempts: int, locked_until: datetime | None
    ) -> None:
        await conn.execute(
            "UPDATE user_passwords SET failed_attempts = %s, locked_until = %s WHERE user_id = %s",
            (failed_attempts, locked_until, user_id),
        )

    async def record_success(self, conn: AsyncConnection[Any], user_id: str, password_hash: str | None) -> None:
        """Clears the failures; ``password_hash`` replaces the stored one when the hash parameters changed."""
        if password_hash is None:
            await conn.execute(
                "UPDATE user_passwords SET failed_attempts = 0, locked_until = NULL WHERE user_id = %s", (user_id,)
            )
        else:
            await conn.execute(
                "UPDATE user_passwords SET failed_attempts = 0, locked_until = NULL, password_hash = %s"
                " WHERE user_id = %s",
                (password_hash, user_id),
            )
