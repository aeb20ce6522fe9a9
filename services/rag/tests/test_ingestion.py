"""Files of every type go through the work queue into pgvector; failures are recorded; deletes cascade."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import nats
import pytest
from fastapi.testclient import TestClient
from rag_documents import SAMPLES, corrupt_pdf, make_docx, make_pdf

from modelhub.events.v1 import events_pb2
from modelhub_common import jetstream
from modelhub_common.events import KNOWLEDGE, decode_envelope
from modelhub_common.objectstore import AsyncObjectStore, ObjectStore
from modelhub_rag import bootstrap
from modelhub_rag.__main__ import main

PDF_PAGES = [
    "Volcano handbook, page one.\nBasalt lava flows are runny and travel far.",
    "Page two covers safety.\nNever approach a fumarole without a gas mask and a partner.",
]
DOCX_PARAGRAPHS = ["Chess openings", "The Sicilian Defence begins with e4 c5 and leads to sharp positions."]


def _top(results: list[dict[str, Any]]) -> dict[str, Any]:
    assert results, "no results"
    return results[0]


def test_every_file_type_is_indexed_and_found_with_its_location(rag: Any) -> None:
    kb = rag.create(name="mixed")
    uploads = {kind: rag.upload(kb["id"], name, data) for kind, (name, data, _) in SAMPLES.items()}
    uploads["pdf"] = rag.upload(kb["id"], "volcano.pdf", make_pdf(PDF_PAGES))
    uploads["docx"] = rag.upload(
        kb["id"], "chess.docx", make_docx(DOCX_PARAGRAPHS, [["opening", "moves"], ["Najdorf", "a6"]])
    )
    assert {kind: u["kind"] for kind, u in uploads.items()} == {k: k for k in uploads}
    assert all(u["status"] == "pending" for u in uploads.values())

    files = rag.wait_files(kb["id"], count=len(uploads))
    assert {f["status"] for f in files} == {"indexed"}, files
    assert all(f["chunks"] >= 1 and f["embedder"] == "onnx:all-MiniLM-L6-v2-int8" for f in files)

    for kind, (name, data, query) in SAMPLES.items():
        hit = _top(rag.query(kb["id"], query))
        assert hit["file_name"] == name, (kind, hit)
        assert hit["page"] is None
        if kind in ("txt", "md"):
            # For plain text the offsets index the file itself.
            assert data.decode()[hit["start_offset"] : hit["end_offset"]] == hit["text"]
    assert "do not index me" not in _top(rag.query(kb["id"], "sourdough bread"))["text"]

    pdf_hit = _top(rag.query(kb["id"], "fumarole gas mask"))
    assert pdf_hit["file_name"] == "volcano.pdf" and pdf_hit["page"] == 2
    assert "fumarole" in pdf_hit["text"] and pdf_hit["end_offset"] > pdf_hit["start_offset"]
    docx_hit = _top(rag.query(kb["id"], "Sicilian Defence chess opening"))
    assert docx_hit["file_name"] == "chess.docx" and "e4 c5" in docx_hit["text"]

    collection = rag.client.get(f"/api/v1/knowledge/{kb['id']}", headers=rag.admin).json()
    assert collection["files"] == {"pending": 0, "indexing": 0, "indexed": 7, "failed": 0, "total": 7}
    assert collection["chunks"] == sum(f["chunks"] for f in files)
    # Exactly one committed event per file on the outbox.
    indexed_events = rag.sql("SELECT count(*) FROM outbox WHERE subject = 'modelhub.knowledge.v1.file_indexed'")
    assert indexed_events == [(7,)]


def test_a_corrupt_pdf_fails_with_its_reason_while_the_others_index(rag: Any) -> None:
    kb = rag.create()
    bad = rag.upload(kb["id"], "broken.pdf", corrupt_pdf())
    good = rag.upload(kb["id"], "good.pdf", make_pdf(["Hedgehogs hibernate from November until March."]))
    text = rag.upload(kb["id"], "a.txt", b"Otters hold hands while they sleep so they do not drift apart.")
    files = {f["id"]: f for f in rag.wait_files(kb["id"], count=3)}
    assert files[bad["id"]]["status"] == "failed"
    assert files[bad["id"]]["error"]["code"] == "corrupt_file"
    assert "PDF" in files[bad["id"]]["error"]["message"]
    assert files[good["id"]]["status"] == "indexed" and files[text["id"]]["status"] == "indexed"
    assert _top(rag.query(kb["id"], "hedgehog hibernation"))["file_id"] == good["id"]
    failed_events = rag.sql("SELECT count(*) FROM outbox WHERE subject = 'modelhub.knowledge.v1.file_failed'")
    assert failed_events == [(1,)]
    assert rag.sql("SELECT count(*) FROM chunks WHERE file_id = %s", bad["id"]) == [(0,)]


def _store(rag: Any) -> AsyncObjectStore:
    s = rag.settings
    return AsyncObjectStore(
        ObjectStore(
            s.s3_endpoint,
            access_key=s.s3_access_key.get_secret_value(),
            secret_key=s.s3_secret_key.get_secret_value(),
            secure=s.s3_secure,
        )
    )


def _wait_gone(rag: Any, key: str) -> None:
    store = _store(rag)
    deadline = time.monotonic() + 30
    while asyncio.run(store.exists(rag.settings.bucket, key)):
        assert time.monotonic() < deadline, f"object {key} was not removed"
        time.sleep(0.2)


def test_deleting_a_file_removes_its_chunks_and_object(rag: Any) -> None:
    kb = rag.create()
    doomed = rag.upload(kb["id"], "a.txt", b"Penguins propose with pebbles.")
    kept = rag.upload(kb["id"], "b.txt", b"Octopuses have three hearts.")
    rag.wait_files(kb["id"], count=2)
    key = rag.sql("SELECT object_key FROM files WHERE id = %s", doomed["id"])[0][0]
    response = rag.client.delete(f"/api/v1/knowledge/{kb['id']}/files/{doomed['id']}", headers=rag.admin)
    assert response.status_code == 204
    assert rag.sql("SELECT count(*) FROM chunks WHERE file_id = %s", doomed["id"]) == [(0,)]
    assert [f["id"] for f in rag.files(kb["id"])] == [kept["id"]]
    assert all(r["file_id"] == kept["id"] for r in rag.query(kb["id"], "penguin pebbles"))
    _wait_gone(rag, key)
    again = rag.client.delete(f"/api/v1/knowledge/{kb['id']}/files/{doomed['id']}", headers=rag.admin)
    assert again.status_code == 404 and again.json()["error"]["code"] == "file_not_found"


def test_deleting_a_collection_cascades_to_files_chunks_objects_and_emits_an_event(rag: Any) -> None:
    kb = rag.create()
    other = rag.create(name="other")
    rag.upload(kb["id"], "a.txt", b"Sloths can hold their breath for forty minutes.")
    rag.upload(kb["id"], "b.md", b"# Bees\n\nBees communicate with a waggle dance.")
    rag.upload(other["id"], "c.txt", b"Koalas sleep up to twenty hours a day.")
    rag.wait_files(kb["id"], count=2)
    rag.wait_files(other["id"], count=1)
    keys = [row[0] for row in rag.sql("SELECT object_key FROM files WHERE collection_id = %s", kb["id"])]

    response = rag.client.delete(f"/api/v1/knowledge/{kb['id']}", headers=rag.admin)
    assert response.status_code == 200 and response.json()["deleted"] == kb["id"]
    assert rag.client.get(f"/api/v1/knowledge/{kb['id']}", headers=rag.admin).status_code == 404
    for table in ("files", "chunks", "collection_grants"):
        assert rag.sql(f"SELECT count(*) FROM {table} WHERE collection_id = %s", kb["id"]) == [(0,)]
    for key in keys:
        _wait_gone(rag, key)
    assert rag.sql("SELECT count(*) FROM outbox WHERE subject = 'modelhub.knowledge.v1.collection_deleted'") == [(1,)]
    # The other collection is untouched.
    assert _top(rag.query(other["id"], "koala sleep"))["file_name"] == "c.txt"


async def _republish(nats_url: str, envelope_bytes: bytes, msg_id: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        envelope = decode_envelope(envelope_bytes)
        await jetstream.publish(nc.jetstream(), KNOWLEDGE.subject("file_added"), envelope, msg_id=msg_id)
    finally:
        await nc.close()


def test_a_redelivered_message_never_duplicates_chunks(rag: Any, nats_url: str) -> None:
    kb = rag.create()
    text = "\n\n".join(f"Paragraph {i}: lighthouses guide ships along rocky coasts at night." for i in range(30))
    file = rag.upload(kb["id"], "lighthouse.txt", text.encode())
    (done,) = rag.wait_files(kb["id"], count=1)
    embedded = rag.embedder.texts
    payload = rag.sql("SELECT payload FROM outbox WHERE subject = 'modelhub.knowledge.v1.file_added'")[0][0]
    # The same event again (as after a lost ack), under a new message id so the stream does not drop it.
    for attempt in range(2):
        asyncio.run(_republish(nats_url, bytes(payload), f"redelivery-{file['id']}-{attempt}"))
    deadline = time.monotonic() + 30
    consumer_done = False
    while not consumer_done:
        assert time.monotonic() < deadline
        pending = asyncio.run(_pending(nats_url))
        consumer_done = pending == 0
        time.sleep(0.2)
    rows = rag.sql("SELECT count(*), count(DISTINCT ordinal) FROM chunks WHERE file_id = %s", file["id"])
    assert rows == [(done["chunks"], done["chunks"])]
    assert rag.embedder.texts == embedded, "a redelivery embedded the file again"
    assert rag.files(kb["id"])[0]["attempts"] == 1


async def _pending(nats_url: str) -> int:
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().consumer_info(KNOWLEDGE.stream, "rag-ingest")
        return int(info.num_pending) + int(info.num_ack_pending)
    finally:
        await nc.close()


def test_identical_content_is_embedded_once_across_collections(rag: Any) -> None:
    first, second = rag.create(name="one"), rag.create(name="two")
    data = ("Glaciers carve U-shaped valleys over thousands of years. " * 40).encode()
    rag.upload(first["id"], "ice.txt", data)
    (a,) = rag.wait_files(first["id"], count=1)
    embedded = rag.embedder.texts
    assert embedded >= a["chunks"]
    rag.upload(second["id"], "same-ice.txt", data)
    (b,) = rag.wait_files(second["id"], count=1)
    assert b["status"] == "indexed" and b["chunks"] == a["chunks"]
    assert rag.embedder.texts == embedded, "identical content was embedded a second time"
    assert _top(rag.query(second["id"], "glacier valleys"))["file_id"] == b["id"]


def test_reindex_re_embeds_every_file_and_replaces_its_chunks(rag: Any) -> None:
    kb = rag.create()
    rag.upload(kb["id"], "a.txt", b"Meteor showers peak when Earth crosses a comet's debris trail.")
    rag.upload(kb["id"], "b.txt", b"Auroras appear when solar wind particles hit the upper atmosphere.")
    before = {f["id"]: f["chunks"] for f in rag.wait_files(kb["id"], count=2)}
    ids_before = {row[0] for row in rag.sql("SELECT id FROM chunks WHERE collection_id = %s", kb["id"])}
    response = rag.client.post(f"/api/v1/knowledge/{kb['id']}/reindex", headers=rag.admin)
    assert response.status_code == 202 and response.json()["files"] == 2
    deadline = time.monotonic() + 60
    while True:
        ids_after = {row[0] for row in rag.sql("SELECT id FROM chunks WHERE collection_id = %s", kb["id"])}
        files = rag.files(kb["id"])
        if all(f["status"] == "indexed" for f in files) and not ids_after & ids_before:
            break
        assert time.monotonic() < deadline, files
        time.sleep(0.2)
    assert {f["id"]: f["chunks"] for f in files} == before
    assert len(ids_after) == sum(before.values())


@pytest.mark.parametrize(
    ("filename", "data", "code"),
    [
        ("photo.pdf", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "unsupported_file_type"),
        ("picture.txt", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "unsupported_file_type"),
        ("data.json", b"{not json", "unsupported_file_type"),
        ("archive.docx", b"PK\x03\x04" + b"\x00" * 100, "unsupported_file_type"),
        ("empty.txt", b"", "empty_file"),
    ],
)
def test_uploads_are_checked_by_content(rag: Any, filename: str, data: bytes, code: str) -> None:
    kb = rag.create()
    response = rag.upload_response(kb["id"], filename, data)
    assert response.status_code == 415, response.text
    assert response.json()["error"]["code"] == code
    assert rag.files(kb["id"]) == []


def test_content_decides_the_type_not_the_name(rag: Any) -> None:
    kb = rag.create()
    assert rag.upload(kb["id"], "report.txt", make_pdf(["Quokkas smile."]))["kind"] == "pdf"
    assert rag.upload(kb["id"], "index", b"<!doctype html><html><body><p>Hi</p></body></html>")["kind"] == "html"


def test_size_limit_and_duplicates(make_rag: Any) -> None:
    rag = make_rag(max_file_bytes=1000)
    kb = rag.create()
    too_big = rag.upload_response(kb["id"], "big.txt", b"a" * 1001)
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "file_too_large"
    first = rag.upload(kb["id"], "a.txt", b"Narwhal tusks are teeth.")
    again = rag.upload_response(kb["id"], "copy.txt", b"Narwhal tusks are teeth.")
    assert again.status_code == 409 and again.json()["error"]["code"] == "duplicate_file"
    assert again.json()["error"]["details"]["file_id"] == first["id"]


def test_file_indexed_events_reach_jetstream_with_the_chunk_count(rag: Any, nats_url: str) -> None:
    kb = rag.create()
    file = rag.upload(kb["id"], "a.txt", b"Tardigrades survive in outer space.")
    (done,) = rag.wait_files(kb["id"], count=1)

    async def find() -> events_pb2.KnowledgeFileIndexed | None:
        nc = await nats.connect(nats_url)
        try:
            sub = await nc.jetstream().subscribe(KNOWLEDGE.subject("file_indexed"), stream=KNOWLEDGE.stream)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    msg = await sub.next_msg(timeout=1)
                except nats.errors.TimeoutError:
                    continue
                event = decode_envelope(msg.data)
                if event.knowledge_file_indexed.file_id == file["id"]:
                    return event.knowledge_file_indexed
            return None
        finally:
            await nc.close()

    indexed = asyncio.run(find())
    assert indexed is not None and indexed.chunks == done["chunks"] and indexed.knowledge_id == kb["id"]


class RenamedEmbedder:
    """The ONNX model under another embedder's name: stands in for a switch to another embedder."""

    def __init__(self, inner: Any, name: str) -> None:
        self.inner, self._name = inner, name

    name = property(lambda self: self._name)
    dimensions = property(lambda self: self.inner.dimensions)
    max_input_tokens = property(lambda self: self.inner.max_input_tokens)
    tokenizer = property(lambda self: self.inner.tokenizer)

    async def embed(self, texts: Any) -> Any:
        return await self.inner.embed(texts)

    async def aclose(self) -> None:
        return None


def test_changing_the_embedder_requires_and_performs_a_reindex(
    rag_settings: Any, make_rag: Any, onnx_embedder: Any
) -> None:
    old = make_rag(rag_settings())
    kb = old.create()
    old.upload(kb["id"], "a.txt", b"Manatees are distant relatives of elephants.")
    old.wait_files(kb["id"], count=1)
    old.client.__exit__(None, None, None)

    switched = old.settings.model_copy(
        update={
            "embedder": "ollama",
            "embedder_url": "http://127.0.0.1:1",
            "embedder_model": "renamed",
            "embedder_dimensions": 384,
            "ingest_max_deliver": 1,
        }
    )

    with TestClient(bootstrap.build_app(switched, embedder=RenamedEmbedder(onnx_embedder, "ollama:renamed"))) as new:
        body = {"query": "manatee relatives"}
        stale = new.post(f"/api/v1/knowledge/{kb['id']}/query", json=body, headers=old.admin)
        assert stale.status_code == 409 and stale.json()["error"]["code"] == "reindex_required"
        assert new.get(f"/api/v1/knowledge/{kb['id']}", headers=old.admin).json()["reindex_required"] is True

        # A file added now cannot be embedded with the collection's embedder by this worker: it fails, clearly.
        added = new.post(
            f"/api/v1/knowledge/{kb['id']}/files",
            files={"file": ("b.txt", b"Dugongs eat seagrass.")},
            headers=old.admin,
        )
        assert added.status_code == 202
        deadline = time.monotonic() + 60
        while (f := new.get(f"/api/v1/knowledge/{kb['id']}/files/{added.json()['id']}", headers=old.admin).json())[
            "status"
        ] not in ("indexed", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert f["status"] == "failed" and f["error"]["code"] == "embedder_mismatch"

        reindex = new.post(f"/api/v1/knowledge/{kb['id']}/reindex", headers=old.admin)
        assert reindex.status_code == 202 and reindex.json() == {
            "knowledge_id": kb["id"],
            "files": 2,
            "embedder": "ollama:renamed",
        }
        deadline = time.monotonic() + 60
        while {
            x["status"] for x in new.get(f"/api/v1/knowledge/{kb['id']}/files", headers=old.admin).json()["items"]
        } != {"indexed"}:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        hits = new.post(f"/api/v1/knowledge/{kb['id']}/query", json=body, headers=old.admin).json()["results"]
        assert hits[0]["file_name"] == "a.txt"
        assert old.sql("SELECT DISTINCT embedder FROM chunks") == [("ollama:renamed",)]


def test_reindex_command_queues_every_collection(rag: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    kb = rag.create()
    rag.upload(kb["id"], "a.txt", b"Chameleons change colour to signal mood.")
    rag.wait_files(kb["id"], count=1)
    s = rag.settings
    for key, value in {
        "NATS_URL": s.nats_url,
        "JWT_SECRET": s.jwt_secret.get_secret_value(),
        "DATABASE_URL": s.database_url.get_secret_value(),
        "S3_ENDPOINT": s.s3_endpoint,
        "S3_ACCESS_KEY": s.s3_access_key.get_secret_value(),
        "S3_SECRET_KEY": s.s3_secret_key.get_secret_value(),
    }.items():
        monkeypatch.setenv(f"MODELHUB_RAG_{key}", value)
    assert main(["reindex", "--all"]) == 0
    assert rag.sql("SELECT count(*) FROM outbox WHERE subject = 'modelhub.knowledge.v1.file_added'") == [(2,)]
    # The running replica publishes the queued work and indexes the file again.
    deadline = time.monotonic() + 60
    while rag.sql("SELECT generation, status FROM files") != [(2, "indexed")]:
        assert time.monotonic() < deadline, rag.sql("SELECT generation, status FROM files")
        time.sleep(0.2)
    assert main(["reindex", "no-such-collection"]) == 1
