"""Knowledge pages over plain HTTP against the real rag service (ONNX embedder, its ingestion worker): create
a collection, upload a file and follow it to "indexed", query it and see the file cited; a stranger gets "not
found"; forms without their CSRF token are refused."""

from __future__ import annotations

import json
import re
import time

import httpx
from console_kit import PASSWORD, SMOLLM2, Stack, token, unique
from test_console_http import CSRF_RE, _turn, page_csrf, signed_in

NOTE = (
    "The lighthouse keeper on Skerry Island winds the clockwork lamp every evening at dusk.\n"
    "Supplies arrive by boat on Thursdays, weather permitting.\n"
)


def _create(client: httpx.Client, name: str) -> str:
    csrf = page_csrf(client, "/knowledge")
    response = client.post("/knowledge/create", data={"csrf_token": csrf, "name": name, "description": "notes"})
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith("/knowledge/collection?id=")
    return location.removeprefix("/knowledge/collection?id=")


def _upload(client: httpx.Client, knowledge_id: str, name: str, text: str) -> httpx.Response:
    csrf = page_csrf(client, f"/knowledge/collection?id={knowledge_id}")
    return client.post(
        "/knowledge/files/upload",
        data={"csrf_token": csrf, "id": knowledge_id},
        files={"file": (name, text.encode(), "text/plain")},
    )


def _wait_indexed(client: httpx.Client, knowledge_id: str, timeout: float = 90) -> str:
    """Polls the fragment the page's htmx polls, until it says every file is settled."""
    deadline = time.monotonic() + timeout
    while True:
        fragment = client.get(f"/knowledge/files?id={knowledge_id}", headers={"HX-Request": "true"})
        assert fragment.status_code == 200
        if 'data-settled="true"' in fragment.text:
            assert 'hx-trigger="every' not in fragment.text  # polling stops once settled
            return fragment.text
        assert 'hx-trigger="every 1s"' in fragment.text
        assert time.monotonic() < deadline, fragment.text
        time.sleep(0.3)


def test_a_collection_is_created_a_file_indexed_and_a_query_cites_it(stack: Stack) -> None:
    client = signed_in(stack, username="alice", password=PASSWORD)
    assert 'href="/knowledge"' in client.get("/models").text  # the nav link
    name = unique("Lighthouse")
    knowledge_id = _create(client, name)
    page = client.get(f"/knowledge/collection?id={knowledge_id}")
    assert page.status_code == 200 and name in page.text and "No files yet." in page.text

    uploaded = _upload(client, knowledge_id, "keeper.txt", NOTE)
    assert uploaded.status_code == 303
    page = client.get(uploaded.headers["location"])
    assert "keeper.txt uploaded" in page.text and "keeper.txt" in page.text

    files = _wait_indexed(client, knowledge_id)
    assert re.search(r'class="file-status status-indexed">indexed<', files), files

    listing = client.get("/knowledge").text
    row = listing[listing.index(name) :]
    assert "<td>1</td>" in row[:400] and "<td>indexed</td>" in row[:400]

    csrf = page_csrf(client, f"/knowledge/collection?id={knowledge_id}")
    answer = client.post(
        "/knowledge/query",
        data={"csrf_token": csrf, "id": knowledge_id, "query": "who winds the lamp?"},
        headers={"HX-Request": "true"},
    )
    assert answer.status_code == 200
    assert '<span class="citation-file">keeper.txt</span>' in answer.text
    assert "clockwork lamp" in answer.text and re.search(r"score -?\d+\.\d{3}", answer.text)
    # Without htmx the same form answers with the whole page.
    whole = client.post("/knowledge/query", data={"csrf_token": csrf, "id": knowledge_id, "query": "boat"})
    assert whole.status_code == 200 and "<html" in whole.text and "keeper.txt" in whole.text


def test_another_users_private_collection_is_not_found(stack: Stack) -> None:
    alice = signed_in(stack, username="alice", password=PASSWORD)
    name = unique("Private")
    knowledge_id = _create(alice, name)
    bob = signed_in(stack, bearer=token("bob", "user"))
    assert name not in bob.get("/knowledge").text
    page = bob.get(f"/knowledge/collection?id={knowledge_id}")
    assert page.status_code == 404 and "does not exist or you cannot read it" in page.text
    csrf = page_csrf(bob, "/knowledge")
    query = bob.post("/knowledge/query", data={"csrf_token": csrf, "id": knowledge_id, "query": "anything"})
    assert query.status_code == 404
    swapped = bob.post(
        "/knowledge/query",
        data={"csrf_token": csrf, "id": knowledge_id, "query": "anything"},
        headers={"HX-Request": "true"},
    )
    assert swapped.status_code == 200 and 'role="alert"' in swapped.text
    assert "does not exist or you cannot read it" in swapped.text and "citation" not in swapped.text
    deleted = bob.post("/knowledge/delete", data={"csrf_token": csrf, "id": knowledge_id})
    assert deleted.status_code == 404
    assert alice.get(f"/knowledge/collection?id={knowledge_id}").status_code == 200


def test_knowledge_forms_without_the_csrf_token_are_refused(stack: Stack) -> None:
    client = signed_in(stack, username="alice", password=PASSWORD)
    knowledge_id = _create(client, unique("Guarded"))
    for path, data in (
        ("/knowledge/create", {"name": unique("Sneaky")}),
        ("/knowledge/delete", {"id": knowledge_id}),
        ("/knowledge/query", {"id": knowledge_id, "query": "x", "csrf_token": "wrong"}),
    ):
        refused = client.post(path, data=data)
        assert refused.status_code == 403, path
        assert "security token" in refused.text
    refused = client.post(
        "/knowledge/files/upload", data={"id": knowledge_id}, files={"file": ("a.txt", b"hello", "text/plain")}
    )
    assert refused.status_code == 403
    page = client.get(f"/knowledge/collection?id={knowledge_id}")
    assert page.status_code == 200 and "No files yet." in page.text


def test_deleting_a_file_and_the_collection_and_a_refused_upload_is_explained(stack: Stack) -> None:
    client = signed_in(stack, username="alice", password=PASSWORD)
    name = unique("Short-lived")
    knowledge_id = _create(client, name)
    refused = _upload(client, knowledge_id, "tool.exe", "MZ\x90\x00 not a document")
    assert refused.status_code == 303
    page = client.get(refused.headers["location"]).text
    assert "tool.exe was not accepted" in page and 'class="flash flash-error"' in page

    assert _upload(client, knowledge_id, "gone.txt", NOTE).status_code == 303
    files = _wait_indexed(client, knowledge_id)
    file_id = re.search(r'name="file_id" value="([^"]+)"', files)
    assert file_id
    csrf = page_csrf(client, f"/knowledge/collection?id={knowledge_id}")
    removed = client.post(
        "/knowledge/files/delete", data={"csrf_token": csrf, "id": knowledge_id, "file_id": file_id.group(1)}
    )
    assert removed.status_code == 303
    page = client.get(removed.headers["location"]).text
    assert "File removed." in page and "No files yet." in page

    again = client.post(
        "/knowledge/files/delete", data={"csrf_token": csrf, "id": knowledge_id, "file_id": file_id.group(1)}
    )
    assert "The file was not removed" in client.get(again.headers["location"]).text

    deleted = client.post("/knowledge/delete", data={"csrf_token": csrf, "id": knowledge_id})
    assert deleted.status_code == 303 and deleted.headers["location"] == "/knowledge"
    listing = client.get("/knowledge").text
    assert "Collection deleted." in listing and name not in listing
    assert client.get(f"/knowledge/collection?id={knowledge_id}").status_code == 404


def test_an_empty_collection_name_is_shown_next_to_the_field(stack: Stack) -> None:
    client = signed_in(stack, username="alice", password=PASSWORD)
    csrf = page_csrf(client, "/knowledge")
    response = client.post("/knowledge/create", data={"csrf_token": csrf, "name": "   "})
    assert response.status_code == 422
    assert 'id="collection-name-error"' in response.text
    assert CSRF_RE.search(response.text)


def test_a_chat_answer_of_a_model_with_knowledge_carries_its_citations_live_and_reopened(stack: Stack) -> None:
    client = signed_in(stack, username="alice", password=PASSWORD)
    knowledge_id = _create(client, unique("Keeper"))
    assert _upload(client, knowledge_id, "keeper.txt", NOTE).status_code == 303
    _wait_indexed(client, knowledge_id)
    model = stack.create_model(
        "alice",
        id=unique("keeper-bot"),
        name="Keeper bot",
        base_model_id=SMOLLM2,
        meta={"knowledge": [{"id": knowledge_id, "name": "Keeper"}]},
    )
    events = _turn(client, page_csrf(client, "/chat"), [model["id"]], "Who winds the clockwork lamp?")
    cited = next(e for e in events if e["type"] == "citations")
    assert cited["model_id"] == model["id"]
    assert {c["file_name"] for c in cited["citations"]} == {"keeper.txt"}
    assert any("clockwork lamp" in c["text"] for c in cited["citations"])
    conversation_id = next(e["conversation_id"] for e in events if e["type"] == "turn_started")
    page = client.get(f"/chat?conversation={conversation_id}").text
    data = re.search(r'<script type="application/json" id="conversation-data">(.*?)</script>', page, re.S)
    assert data
    (turn,) = json.loads(data.group(1))["turns"]
    (answer,) = turn["columns"][0]["answers"]
    assert [c["file_name"] for c in answer["citations"]] == ["keeper.txt"] * len(answer["citations"])
    assert answer["citations"]
