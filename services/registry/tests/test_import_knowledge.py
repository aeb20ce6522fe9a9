"""An import warns about knowledge collections the RAG service does not know (a real rag service over HTTP)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from modelhub_devstack.ports import pick_free_port

if TYPE_CHECKING:
    from conftest import Registry


@pytest.fixture
def rag_url(rag_service: str) -> str:
    """The real rag service (root conftest), on its own database."""
    return rag_service


def _collection(rag_url: str, headers: dict[str, str], name: str) -> str:
    response = httpx.post(f"{rag_url}/api/v1/knowledge", json={"name": name}, headers=headers, timeout=30)
    assert response.status_code == 201, response.text
    knowledge_id: str = response.json()["id"]
    return knowledge_id


def _model(model_id: str, *knowledge_ids: str, kind: str = "collection") -> dict[str, Any]:
    return {
        "id": model_id,
        "name": model_id,
        "base_model_id": "llama3.1:8b",
        "meta": {"knowledge": [{"id": k, "name": k, "type": kind} for k in knowledge_ids]},
    }


def _import(registry: Registry, items: list[dict[str, Any]], headers: dict[str, str], query: str = "") -> Any:
    response = registry.client.post(
        f"/api/v1/models/import{query}",
        content=json.dumps(items).encode(),
        headers={**headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    return response.json()


def _registry(make_registry: Callable[..., Registry], **overrides: Any) -> Registry:
    registry = make_registry(**overrides)
    registry.add_base()
    return registry


def test_missing_and_unreadable_knowledge_are_warned_about_per_model(
    make_registry: Callable[..., Registry], rag_url: str
) -> None:
    registry = _registry(make_registry, rag_url=rag_url)
    alice, bob = registry.as_user("alice"), registry.as_user("bob")
    mine = _collection(rag_url, alice, "alice's notes")
    private = _collection(rag_url, bob, "bob's notes")
    ghost = str(uuid.uuid4())

    report = _import(
        registry,
        [
            _model("uses-mine", mine),
            _model("uses-ghost", mine, ghost),
            _model("uses-private", private, "not-a-uuid/with:odd chars"),
            _model("uses-a-file", kind="file"),
        ],
        alice,
        "?dry_run=true",
    )
    assert report["knowledge_checked"] is True
    assert report["created"] == ["uses-mine", "uses-ghost", "uses-private", "uses-a-file"]
    assert [(w["index"], w["id"], w["message"]) for w in report["warnings"]] == [
        (
            1,
            "uses-ghost",
            f"knowledge '{ghost}' does not exist here or you cannot read it; model 'uses-ghost' refers to it",
        ),
        (
            2,
            "uses-private",
            f"knowledge '{private}' does not exist here or you cannot read it; model 'uses-private' refers to it",
        ),
        (
            2,
            "uses-private",
            "knowledge 'not-a-uuid/with:odd chars' does not exist here or you cannot read it; "
            "model 'uses-private' refers to it",
        ),
    ]
    # Bob reads his own collection: the same file warns him only about the ones he lacks.
    again = _import(registry, [_model("uses-private", private)], bob)
    assert again["created"] == ["uses-private"] and again["warnings"] == []


def test_without_a_rag_url_the_report_says_knowledge_was_not_checked(registry: Registry) -> None:
    alice = registry.as_user("alice")
    report = _import(registry, [_model("with-knowledge", str(uuid.uuid4()))], alice)
    assert report["created"] == ["with-knowledge"] and report["knowledge_checked"] is False
    assert [(w["index"], w["id"]) for w in report["warnings"]] == [(None, None)]
    assert "knowledge references were not checked" in report["warnings"][0]["message"]

    plain = _import(registry, [_model("without-knowledge")], alice)
    assert plain["knowledge_checked"] is True and plain["warnings"] == []


def test_a_rag_outage_is_a_warning_and_the_import_goes_on(make_registry: Callable[..., Registry]) -> None:
    registry = _registry(make_registry, rag_url=f"http://127.0.0.1:{pick_free_port()}", rag_timeout_seconds=2)
    report = _import(registry, [_model("during-outage", str(uuid.uuid4()))], registry.as_user("alice"))
    assert report["created"] == ["during-outage"] and report["knowledge_checked"] is False
    [warning] = report["warnings"]
    assert warning["index"] is None and "cannot reach the knowledge service" in warning["message"]
