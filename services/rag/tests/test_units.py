"""Unit tests of the pure parts: file types, extraction, chunking, fusion, and the embedders' adapters."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import numpy as np
import pytest
from rag_documents import corrupt_pdf, make_docx, make_pdf

from modelhub_rag.adapters.embedders import OllamaEmbedder, OpenAICompatibleEmbedder, WordPieceTokenizer
from modelhub_rag.domain import chunking, extraction, filetypes
from modelhub_rag.domain.chunking import ChunkingPolicy
from modelhub_rag.domain.extraction import ExtractedText, PageSpan
from modelhub_rag.domain.fusion import reciprocal_rank_fusion
from modelhub_rag.errors import EmbedderError, EmbedderUnavailableError, FileProcessingError, UnsupportedFileTypeError

TOKENIZER = WordPieceTokenizer()


def test_chunks_fit_the_token_limit_overlap_and_point_back_into_the_text() -> None:
    text = "\n\n".join(
        f"Paragraph {p}. " + " ".join(f"Sentence {s} talks about subject {p}-{s} at some length." for s in range(8))
        for p in range(12)
    )
    policy = ChunkingPolicy(chunk_tokens=64, overlap_tokens=16)
    chunks = chunking.split(ExtractedText(text), policy, TOKENIZER)
    assert len(chunks) > 10
    for index, chunk in enumerate(chunks):
        assert chunk.ordinal == index
        assert text[chunk.start_offset : chunk.end_offset] == chunk.text
        assert TOKENIZER.count(chunk.text) <= 64
        assert chunk.token_count <= 64
        assert not chunk.text.startswith(("#", " "))
    # Consecutive chunks overlap, and together they cover the whole text.
    assert all(b.start_offset < a.end_offset for a, b in zip(chunks, chunks[1:], strict=False))
    assert chunks[0].start_offset == 0 and chunks[-1].end_offset == len(text.rstrip())
    # Cuts prefer the end of a sentence.
    assert sum(c.text.rstrip().endswith(".") for c in chunks) >= len(chunks) - 1


def test_chunks_never_cross_pages() -> None:
    first, second = "Alpha page text. " * 30, "Beta page text. " * 30
    text = first + "\n\n" + second
    pages = (PageSpan(1, 0, len(first)), PageSpan(2, len(first) + 2, len(text)))
    chunks = chunking.split(ExtractedText(text, pages), ChunkingPolicy(40, 8), TOKENIZER)
    assert {c.page for c in chunks} == {1, 2}
    assert all(("Beta" in c.text) == (c.page == 2) for c in chunks)


def test_chunking_policy_rejects_overlap_not_smaller_than_chunk() -> None:
    with pytest.raises(ValueError):
        ChunkingPolicy(32, 32)


def test_reciprocal_rank_fusion() -> None:
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["c", "d"]], k=60)
    assert [item for item, _ in fused] == ["c", "a", "b", "d"]
    assert fused[0][1] == pytest.approx(1 / 63 + 1 / 61)
    assert reciprocal_rank_fusion([[], []]) == []
    assert len(reciprocal_rank_fusion([["a", "b"]], limit=1)) == 1


@pytest.mark.parametrize(
    ("name", "data", "kind"),
    [
        ("a.pdf", make_pdf(["x"]), "pdf"),
        ("a.docx", make_docx(["x"]), "docx"),
        ("a.html", b"<p>hello</p>", "html"),
        ("noext", b"<!DOCTYPE html><html><body>x</body></html>", "html"),
        ("a.md", b"# Title", "md"),
        ("a.csv", b"a,b\n1,2\n3,4\n", "csv"),
        ("a.json", b'{"a": 1}', "json"),
        ("noext", b'[{"a": 1}]', "json"),
        ("a.txt", "caf\xe9 cr\xe8me".encode("latin-1"), "txt"),
        ("a.log", b"plain words", "txt"),
    ],
)
def test_file_types_are_detected_by_content(name: str, data: bytes, kind: str) -> None:
    assert filetypes.detect(data, name).kind == kind


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("a.pdf", b"just text"),
        ("a.docx", b"PK\x03\x04not really a zip"),
        ("a.json", b"{broken"),
        ("a.html", b"no markup here"),
        ("a.csv", b"a,b,c\n1\n1,2,3,4,5\n"),
        ("a.txt", b"\x7fELF\x02\x01\x01" + b"\x00" * 64),
        ("a.txt", b"abc\x00def" * 10),
    ],
)
def test_mismatched_or_binary_content_is_refused(name: str, data: bytes) -> None:
    with pytest.raises(UnsupportedFileTypeError):
        filetypes.detect(data, name)


def test_extraction_of_structured_formats() -> None:
    csv_text = extraction.extract("csv", b"name,role\nAda,engineer\nGrace,admiral\n", max_chars=10_000).text
    assert csv_text.splitlines() == ["name: Ada; role: engineer", "name: Grace; role: admiral"]
    json_text = extraction.extract("json", json.dumps({"a": {"b": [1, True, None]}}).encode(), max_chars=10_000).text
    assert json_text.splitlines() == ["a.b[0]: 1", "a.b[1]: true", "a.b[2]: null"]
    html = extraction.extract(
        "html", b"<html><body><h1>T</h1><script>x()</script><p>Body</p></body></html>", max_chars=1000
    )
    assert "Body" in html.text and "x()" not in html.text
    pdf = extraction.extract("pdf", make_pdf(["one", "two"]), max_chars=1000)
    assert [p.number for p in pdf.pages] == [1, 2]
    assert pdf.text[pdf.pages[1].start : pdf.pages[1].end] == "two"
    docx = extraction.extract("docx", make_docx(["Hello"], [["k", "v"]]), max_chars=1000)
    assert "Hello" in docx.text and "k | v" in docx.text


@pytest.mark.parametrize(
    ("kind", "data", "code"),
    [
        ("pdf", corrupt_pdf(), "corrupt_file"),
        ("pdf", make_pdf([""]), "no_text"),
        ("docx", b"PK\x03\x04broken", "corrupt_file"),
        ("txt", b"   \n  ", "no_text"),
        ("txt", b"a" * 101, "text_too_long"),
    ],
)
def test_extraction_failures_have_stable_codes(kind: Any, data: bytes, code: str) -> None:
    with pytest.raises(FileProcessingError) as raised:
        extraction.extract(kind, data, max_chars=100)
    assert raised.value.code == code


def test_onnx_embedder_matches_the_reference_similarities(onnx_embedder: Any) -> None:
    vectors = asyncio.run(
        onnx_embedder.embed(["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell."])
    )
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert float(vectors[0] @ vectors[1]) == pytest.approx(0.75, abs=0.03)
    assert abs(float(vectors[0] @ vectors[2])) < 0.2


def _client(handler: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def test_ollama_embedder_request_and_errors() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append({"path": request.url.path, **body})
        return httpx.Response(200, json={"embeddings": [[3.0, 4.0]] * len(body["input"])})

    async def run() -> None:
        async with _client(handler) as client:
            embedder = OllamaEmbedder(
                client, base_url="http://o:11434", model="nomic", dimensions=2, tokenizer=TOKENIZER
            )
            vectors = await embedder.embed(["a", "b"])
            assert np.allclose(vectors, [[0.6, 0.8], [0.6, 0.8]])
            assert embedder.name == "ollama:nomic"
            wrong = OllamaEmbedder(client, base_url="http://o:11434", model="m", dimensions=3, tokenizer=TOKENIZER)
            with pytest.raises(EmbedderError, match="2-dimensional"):
                await wrong.embed(["a"])

    asyncio.run(run())
    assert seen[0] == {"path": "/api/embed", "model": "nomic", "input": ["a", "b"], "truncate": True}


def test_openai_embedder_orders_by_index_and_maps_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/embeddings"
        assert request.headers["authorization"] == "Bearer k"
        return httpx.Response(
            200, json={"data": [{"index": 1, "embedding": [0, 1]}, {"index": 0, "embedding": [1, 0]}]}
        )

    def down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, text="overloaded")

    def refused(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, text="bad key")

    async def run() -> None:
        async with _client(handler) as client:
            embedder = OpenAICompatibleEmbedder(
                client, base_url="http://x/v1", model="te3", dimensions=2, tokenizer=TOKENIZER, api_key="k"
            )
            assert (await embedder.embed(["first", "second"])).tolist() == [[1, 0], [0, 1]]
        for failing, error in ((down, EmbedderUnavailableError), (refused, EmbedderError)):
            async with _client(failing) as client:
                embedder = OpenAICompatibleEmbedder(
                    client, base_url="http://x", model="m", dimensions=2, tokenizer=TOKENIZER
                )
                with pytest.raises(error):
                    await embedder.embed(["a"])

    asyncio.run(run())
