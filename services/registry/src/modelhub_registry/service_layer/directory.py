"""Users, groups and tokens (admin only)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from psycopg_pool import AsyncConnectionPool

from modelhub_common.auth import issue_token
from modelhub_registry.adapters.directory_repository import DirectoryRepository, DuplicateError, Group, User
from modelhub_registry.errors import ConflictError, NotFoundError


class DirectoryService:
    def __init__(self, pool: AsyncConnectionPool, *, secret: str, issuer: str, max_token_ttl: int) -> None:
        self.pool = pool
        self.secret = secret
        self.issuer = issuer
        self.max_token_ttl = max_token_ttl
        self.repo = DirectoryRepository()

    async def add_user(self, *, id: str, name: str, email: str | None, role: str) -> User:
        async with self.pool.connection() as conn, conn.transaction():
            try:
                return await self.repo.add_user(conn, id=id, name=name, email=email, role=role)
            except DuplicateError as exc:
                raise ConflictError(f"user '{id}' already exists") from exc

    async def users(self) -> list[User]:
        async with self.pool.connection() as conn:
            return await self.repo.users(conn)

    async def delete_user(self, user_id: str) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            if not await self.repo.delete_user(conn, user_id):
                raise NotFoundError(f"user '{user_id}' does not exist")

    async def add_group(self, *, id: str, name: str) -> Group:
        async with self.pool.connection() as conn, conn.transaction():
            try:
                return await self.repo.add_group(conn, id=id, name=name)
            except DuplicateError as exc:
                raise ConflictError(f"group '{id}' already exists") from exc

    async def groups(self) -> list[Group]:
        async with self.pool.connection() as conn:
            return await self.repo.groups(conn)

    async def delete_group(self, group_id: str) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            if not await self.repo.delete_group(conn, group_id):
                raise NotFoundError(f"group '{group_id}' does not exist")

    async def add_member(self, group_id: str, user_id: str) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            if group_id not in {g.id for g in await self.repo.groups(conn)}:
                raise NotFoundError(f"group '{group_id}' does not exist")
            if await self.repo.user(conn, user_id) is None:
                raise NotFoundError(f"user '{user_id}' does not exist")
            await self.repo.add_member(conn, group_id, user_id)

    async def remove_member(self, group_id: str, user_id: str) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            if not await self.repo.remove_member(conn, group_id, user_id):
                raise NotFoundError(f"user '{user_id}' is not in group '{group_id}'")

    async def issue(self, user_id: str, ttl_seconds: int) -> tuple[str, datetime]:
        """A token carrying the user's role and current groups; group changes apply to new tokens."""
        ttl = min(ttl_seconds, self.max_token_ttl)
        async with self.pool.connection() as conn:
            user = await self.repo.user(conn, user_id)
        if user is None:
            raise NotFoundError(f"user '{user_id}' does not exist; create it first")
        token = issue_token(
            self.secret,
            subject=user.id,
            role=user.role,
            groups=user.groups,
            ttl_seconds=ttl,
            issuer=self.issuer,
        )
        return token, datetime.now(UTC) + timedelta(seconds=ttl)
