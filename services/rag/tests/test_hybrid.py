"""Hybrid retrieval finds an exact identifier that pure vector search misses.

The identifier sits in one chunk about something else entirely, so that chunk's embedding says "garden
party". Other chunks hold look-alike codes written without hyphens: to the embedding (which sees word
pieces) they are nearly the same string, to full-text search they are different words.
"""

from __future__ import annotations

from typing import Any

import psycopg

TARGET = "ERR-7Q4-ZX81"
LOOK_ALIKES = [
    "ERR7Q4ZX81",
    "ERR7Q4ZX18",
    "ERR7Q5ZX81",
    "ERR8Q4ZX81",
    "ERR7Q4ZY81",
    "ERR7R4ZX81",
    "ERR7Q4ZX80",
    "ERR1Q4ZX81",
    "ERR7Q9ZX81",
    "ERR7Q4ZW81",
]
TARGET_PARAGRAPH = (
    "The quarterly garden party moved indoors because of the rain. The catering team served lemonade, scones and"
    f" strawberries, and the projector briefly showed {TARGET} before the speeches about the new library wing."
)


def test_hybrid_finds_an_exact_identifier_that_vector_search_misses(make_rag: Any) -> None:
    rag = make_rag()
    kb = rag.create()
    # One file (and so one chunk) per paragraph.
    for i, code in enumerate(LOOK_ALIKES):
        rag.upload(kb["id"], f"log-{i}.txt", f"Log line {i}: {code} timeout on node {i}.".encode())
    file = rag.upload(kb["id"], "party.txt", TARGET_PARAGRAPH.encode())
    files = rag.wait_files(kb["id"], count=len(LOOK_ALIKES) + 1)
    assert all(f["status"] == "indexed" and f["chunks"] == 1 for f in files)

    vector = rag.query(kb["id"], TARGET, k=5, mode="vector")
    assert len(vector) == 5
    assert all(TARGET not in r["text"] for r in vector), "pure vector search found the identifier after all"

    hybrid = rag.query(kb["id"], TARGET, k=5)
    assert TARGET in hybrid[0]["text"] and hybrid[0]["file_id"] == file["id"]
    assert rag.query(kb["id"], TARGET, k=5, mode="text")[0]["text"] == hybrid[0]["text"]

    # Asked as a question, too: the text ranker ignores filler words and the code decides.
    question = rag.query(kb["id"], f"What caused {TARGET}?", k=3)
    assert TARGET in question[0]["text"]


def test_common_words_do_not_flood_the_text_ranker(rag: Any) -> None:
    kb = rag.create()
    paragraphs = [f"Harbor log {i}: the harbor crane moved containers at the harbor gate." for i in range(300)]
    paragraphs[123] = "Harbor log 123: the harbor pilot reported buoy ZX-991 adrift near the harbor gate."
    for start in range(0, 300, 100):
        rag.upload(kb["id"], f"log-{start}.txt", "\n\n".join(paragraphs[start : start + 100]).encode())
    rag.wait_files(kb["id"], count=3)
    with psycopg.connect(rag.db, autocommit=True) as conn:
        conn.execute("ANALYZE chunks")
    common = rag.sql(
        "SELECT count(*) FROM pg_stats, unnest(most_common_elems::text::text[]) AS e"
        " WHERE tablename = 'chunks' AND attname = 'tsv' AND e = 'harbor'"
    )
    assert common == [(1,)], "the statistics should know 'harbor' as a common word"
    # 'harbor' is in every chunk: only the rare word selects candidates, so the one chunk with it comes first.
    hits = rag.query(kb["id"], "harbor ZX-991", k=3, mode="text")
    assert "ZX-991" in hits[0]["text"]
    # A query of common words only still finds chunks (they must then contain every word).
    assert rag.query(kb["id"], "harbor crane containers", k=3, mode="text")
