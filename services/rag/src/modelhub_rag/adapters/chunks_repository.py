"""Chunks, their vectors and the two candidate searches hybrid retrieval fuses. Runs in the caller's transaction.

Vector search uses the partial HNSW index of the embedder's size: ``embedding::halfvec(N) <=> query`` with
``dimensions = N`` in the filter, so the size is part of the SQL text (an int, never user input). The index
holds half-precision copies of the vectors (see migration 0002): half the pages to visit per search, the
same top results (recall is measured by ``bench/rag.py``). With ``hnsw.iterative_scan`` the index keeps
scanning until enough rows pass the collection filter, so a small collection in a large table still gets its
top results; rows may then come slightly out of order, so callers sort candidates by the distance returned.
The search settings are session settings of the connection (:func:`configure_search_session`, applied once
when a search connection opens), so that a search is one statement and one round trip.

Text search uses the ``rag_text`` configuration (see the migration), ranked by ``ts_rank`` against *any* word
of the query: identifiers and error codes that the embedding blurs are found by this ranker. Which rows are
ranked is decided by the query's *rare* words only, judged by the table statistics PostgreSQL keeps anyway
(``pg_stats.most_common_elems`` of ``tsv``): a word in more than ``common_fraction`` of all chunks would
make thousands of rows candidates and rank them all (100+ ms at 100,000 chunks) while saying little about
relevance. When every word of the query is common, rows must contain all of them instead. Until the table
has statistics every word counts as rare, which is what a small table needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection, sql

from modelhub_rag.domain.chunking import Chunk
from modelhub_rag.domain.embedding import Vectors

MAX_QUERY_LEXEMES = 64

_COPY_TYPES = ["text", "text", "int4", "text", "int4", "int4", "int4", "int4", "text", "int4", "vector"]
_COLUMNS = (
    "collection_id, file_id, ordinal, text, page, start_offset, end_offset, token_count, embedder, dimensions,"
    " embedding"
)

# The query's lexemes with their share of chunks from the planner's statistics (0 when not among the most
# common), and three tsqueries built from them: any word (for ranking), any rare word, every word. Each
# lexeme is quoted for tsquery input; a query without lexemes is NULL and matches nothing.
_QUOTED = "'''' || replace(replace(lexeme, '\\', '\\\\'), '''', '''''') || ''''"
# The candidate's own columns are read with the row the ranker visits anyway; the file name joins the few
# rows that survive the LIMIT.
_ROW_COLUMNS = "c.collection_id, c.file_id, c.text, c.page, c.start_offset, c.end_offset"
_TEXT_QUERY = f"""
WITH lexemes AS (
    SELECT lexeme FROM unnest(tsvector_to_array(to_tsvector('rag_text'::regconfig, %(text)s))) AS lexeme
    LIMIT {MAX_QUERY_LEXEMES}
), common AS (
    SELECT e.lexeme, e.share
    FROM pg_stats s, unnest(s.most_common_elems::text::text[], s.most_common_elem_freqs) AS e(lexeme, share)
    WHERE s.schemaname = current_schema() AND s.tablename = 'chunks' AND s.attname = 'tsv'
), rated AS (
    SELECT l.lexeme, COALESCE(max(c.share), 0) AS share FROM lexemes l LEFT JOIN common c USING (lexeme)
    GROUP BY l.lexeme
), q AS (
    SELECT (SELECT string_agg({_QUOTED}, ' | ') FROM rated)::tsquery AS any_word,
           (SELECT string_agg({_QUOTED}, ' | ') FROM rated WHERE share <= %(common)s)::tsquery AS rare_words,
           (SELECT string_agg({_QUOTED}, ' & ') FROM rated)::tsquery AS every_word
)
SELECT t.*, f.name FROM (
    SELECT c.id, ts_rank(c.tsv, q.any_word) AS rank, {_ROW_COLUMNS} FROM chunks c, q
    WHERE c.tsv @@ COALESCE(q.rare_words, q.every_word) AND c.collection_id = ANY(%(collections)s) {{files}}
    ORDER BY rank DESC, c.id LIMIT %(limit)s
) t JOIN files f ON f.id = t.file_id
ORDER BY t.rank DESC, t.id
"""


async def configure_search_session(conn: AsyncConnection[Any], *, ef_search: int) -> None:
    """HNSW settings for every vector search on ``conn``; in autocommit, so no rollback can undo them."""
    if not conn.autocommit:
        raise ValueError("search connections must be in autocommit mode")
    await conn.execute(
        "SELECT set_config('hnsw.ef_search', %s, false), set_config('hnsw.iterative_scan', 'relaxed_order', false)",
        (str(int(ef_search)),),
    )


def vector_index_sql(dimensions: int) -> sql.Composed:
    """The partial HNSW index over vectors of ``dimensions`` that :meth:`ChunksRepository.vector_candidates` uses."""
    dims = int(dimensions)
    return sql.SQL(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON chunks USING hnsw"
        " ((embedding::halfvec({dims})) halfvec_cosine_ops) WITH (m = 16, ef_construction = 128)"
        " WHERE dimensions = {dims}"
    ).format(name=sql.Identifier(vector_index_name(dims)), dims=sql.Literal(dims))


def vector_index_name(dimensions: int) -> str:
    return f"chunks_halfvec_{int(dimensions)}_idx"


@dataclass(frozen=True)
class ChunkRow:
    id: int
    collection_id: str
    file_id: str
    file_name: str
    text: str
    page: int | None
    start_offset: int
    end_offset: int


@dataclass(frozen=True)
class Candidate:
    """A ranked chunk with everything a result needs, so that no second query is needed to show it."""

    chunk_id: int
    value: float
    """Cosine distance (vector ranker, lower is better) or text rank (text ranker, higher is better)."""
    row: ChunkRow


def _candidate(record: tuple[Any, ...]) -> Candidate:
    chunk_id, value, collection_id, file_id, text, page, start, end, file_name = record
    row = ChunkRow(int(chunk_id), collection_id, file_id, file_name, text, page, start, end)
    return Candidate(int(chunk_id), float(value), row)


class ChunksRepository:
    async def write(
        self,
        conn: AsyncConnection[Any],
        *,
        collection_id: str,
        file_id: str,
        chunks: Sequence[Chunk],
        vectors: Vectors,
        embedder: str,
    ) -> int:
        """Binary COPY of a file's chunks; the vector type must be registered on ``conn``."""
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        dimensions = int(vectors.shape[1]) if len(vectors) else 0
        async with conn.cursor() as cur:
            async with cur.copy(f"COPY chunks ({_COLUMNS}) FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(_COPY_TYPES)
                for chunk, vector in zip(chunks, vectors, strict=True):
                    await copy.write_row(
                        (
                            collection_id,
                            file_id,
                            chunk.ordinal,
                            chunk.text,
                            chunk.page,
                            chunk.start_offset,
                            chunk.end_offset,
                            chunk.token_count,
                            embedder,
                            dimensions,
                            vector,
                        )
                    )
        return len(chunks)

    async def copy_from(
        self, conn: AsyncConnection[Any], *, donor_file_id: str, collection_id: str, file_id: str
    ) -> int:
        cur = await conn.execute(
            f"INSERT INTO chunks ({_COLUMNS})"
            " SELECT %s, %s, ordinal, text, page, start_offset, end_offset, token_count, embedder, dimensions,"
            " embedding"
            " FROM chunks WHERE file_id = %s ORDER BY ordinal",
            (collection_id, file_id, donor_file_id),
        )
        return cur.rowcount

    async def delete_for_file(self, conn: AsyncConnection[Any], file_id: str) -> int:
        cur = await conn.execute("DELETE FROM chunks WHERE file_id = %s", (file_id,))
        return cur.rowcount

    async def count_for_file(self, conn: AsyncConnection[Any], file_id: str) -> int:
        cur = await conn.execute("SELECT count(*) FROM chunks WHERE file_id = %s", (file_id,))
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def vector_candidates(
        self,
        conn: AsyncConnection[Any],
        *,
        vector: Any,
        dimensions: int,
        embedder: str,
        collection_ids: Sequence[str],
        file_ids: Sequence[str] | None,
        limit: int,
    ) -> list[Candidate]:
        """Nearest chunks by cosine distance on a search connection (see :func:`configure_search_session`)."""
        dims = int(dimensions)
        distance = sql.SQL("embedding::halfvec({dims}) <=> %(vector)s::halfvec({dims})").format(dims=sql.Literal(dims))
        query = sql.SQL(
            "SELECT n.*, f.name FROM (SELECT c.id, {distance} AS distance, {columns} FROM chunks c"
            " WHERE c.dimensions = {dims} AND c.embedder = %(embedder)s AND c.collection_id = ANY(%(collections)s)"
            "{files} ORDER BY {distance} LIMIT %(limit)s) n JOIN files f ON f.id = n.file_id"
        ).format(
            distance=distance,
            columns=sql.SQL(_ROW_COLUMNS),
            dims=sql.Literal(dims),
            files=sql.SQL(" AND c.file_id = ANY(%(files)s)") if file_ids else sql.SQL(""),
        )
        params = {
            "vector": vector,
            "embedder": embedder,
            "collections": list(collection_ids),
            "files": list(file_ids or []),
            "limit": limit,
        }
        cur = await conn.execute(query, params)
        rows = [_candidate(r) for r in await cur.fetchall()]
        return sorted(rows, key=lambda c: (c.value, c.chunk_id))

    async def text_candidates(
        self,
        conn: AsyncConnection[Any],
        *,
        text: str,
        collection_ids: Sequence[str],
        file_ids: Sequence[str] | None,
        limit: int,
        common_fraction: float = 0.01,
    ) -> list[Candidate]:
        query = _TEXT_QUERY.format(files="AND c.file_id = ANY(%(files)s)" if file_ids else "")
        params = {
            "text": text,
            "collections": list(collection_ids),
            "files": list(file_ids or []),
            "limit": limit,
            "common": common_fraction,
        }
        cur = await conn.execute(query, params)
        return [_candidate(r) for r in await cur.fetchall()]
