"""pgvector's types on pooled connections, registered once per connection (the pool has no configure hook)."""

from __future__ import annotations

import weakref
from typing import Any

from pgvector.psycopg.vector import register_vector_info
from psycopg import AsyncConnection
from psycopg.types import TypeInfo

from modelhub_common.errors import ConfigurationError


class VectorTypes:
    def __init__(self) -> None:
        self._info: TypeInfo | None = None
        self._done: weakref.WeakSet[AsyncConnection[Any]] = weakref.WeakSet()

    async def register(self, conn: AsyncConnection[Any]) -> None:
        if conn in self._done:
            return
        if self._info is None:
            self._info = await TypeInfo.fetch(conn, "vector")
            if self._info is None:
                raise ConfigurationError("the vector extension is missing: run `python -m modelhub_rag migrate`")
        register_vector_info(conn, self._info)
        self._done.add(conn)
