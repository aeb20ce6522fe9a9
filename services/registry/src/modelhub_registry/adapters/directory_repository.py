"""Users and groups in PostgreSQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, errors
from psycopg.rows import dict_row
from pydantic import BaseModel


class User(BaseModel):
    id: str
    name: str
    email: str | None = None
    role: str
    created_at: datetime
    groups: list[str] = []


class Group(BaseModel):
    id: str
    name: str
    created_at: datetime
    members: list[str] = []


class DuplicateError(Exception):
    pass


class DirectoryRepository:
    async def add_user(self, conn: AsyncConnection[Any], *, id: str, name: str, email: str | None, role: str) -> User:
        try:
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(
                    "INSERT INTO users (id, name, email, role) VALUES (%s, %s, %s, %s) RETURNING *",
                    (id, name, email, role),
                )
                row = await cur.fetchone()
        except errors.UniqueViolation as exc:
            raise DuplicateError(id) from exc
        assert row is not None
        return User.model_validate(row)

    async def users(self, conn: AsyncConnection[Any]) -> list[User]:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "SELECT u.*, COALESCE(array_agg(gm.group_id ORDER BY gm.group_id)"
                " FILTER (WHERE gm.group_id IS NOT NULL), '{}') AS groups"
                " FROM users u LEFT JOIN group_members gm ON gm.user_id = u.id GROUP BY u.id ORDER BY u.id"
            )
            return [User.model_validate(r) for r in await cur.fetchall()]

    async def user(self, conn: AsyncConnection[Any], user_id: str) -> User | None:
        return next((u for u in await self.users(conn) if u.id == user_id), None)

    async def delete_user(self, conn: AsyncConnection[Any], user_id: str) -> bool:
        cur = await conn.execute("DELETE FROM users WHERE id = %s RETURNING id", (user_id,))
        return await cur.fetchone() is not None

    async def add_group(self, conn: AsyncConnection[Any], *, id: str, name: str) -> Group:
        try:
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute("INSERT INTO groups (id, name) VALUES (%s, %s) RETURNING *", (id, name))
                row = await cur.fetchone()
        except errors.UniqueViolation as exc:
            raise DuplicateError(id) from exc
        assert row is not None
        return Group.model_validate(row)

    async def groups(self, conn: AsyncConnection[Any]) -> list[Group]:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "SELECT g.*, COALESCE(array_agg(gm.user_id ORDER BY gm.user_id)"
                " FILTER (WHERE gm.user_id IS NOT NULL), '{}') AS members"
                " FROM groups g LEFT JOIN group_members gm ON gm.group_id = g.id GROUP BY g.id ORDER BY g.id"
            )
            return [Group.model_validate(r) for r in await cur.fetchall()]

    async def delete_group(self, conn: AsyncConnection[Any], group_id: str) -> bool:
        cur = await conn.execute("DELETE FROM groups WHERE id = %s RETURNING id", (group_id,))
        return await cur.fetchone() is not None

    async def add_member(self, conn: AsyncConnection[Any], group_id: str, user_id: str) -> None:
        await conn.execute(
            "INSERT INTO group_members (group_id, user_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (group_id, user_id),
        )

    async def remove_member(self, conn: AsyncConnection[Any], group_id: str, user_id: str) -> bool:
        cur = await conn.execute(
            "DELETE FROM group_members WHERE group_id = %s AND user_id = %s RETURNING user_id",
            (group_id, user_id),
        )
        return await cur.fetchone() is not None
