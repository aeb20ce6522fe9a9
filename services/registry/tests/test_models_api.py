"""The model-file REST API against real PostgreSQL, NATS and S3."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Registry


def test_create_get_and_ids_with_slashes_and_colons(registry: Registry) -> None:
    alice = registry.as_user("alice")
    created = registry.create(
        alice,
        id="hf.co/user/repo:Q4_K_M",
        name="Repo",
        params={"system": "You help {{ USER_NAME }}", "temperature": 0.3, "stop": "END", "custom_key": {"a": 1}},
        meta={"tags": ["a", {"name": "b"}, "a"], "toolIds": ["calc"], "description": "d"},
    )
    assert created["version"] == 1 and created["owner_id"] == "alice"
    assert created["params"] == {
        "system": "You help {{ USER_NAME }}",
        "temperature": 0.3,
        "stop": ["END"],
        "custom_key": {"a": 1},
    }
    assert created["meta"]["tags"] == ["a", "b"] and created["meta"]["tool_ids"] == ["calc"]
    response = registry.client.get("/api/v1/models/hf.co/user/repo:Q4_K_M", headers=alice)
    assert response.status_code == 200 and response.headers["ETag"] == '"1"'
    assert response.json()["name"] == "Repo"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"params": {"temperature": 5}}, "params.temperature"),
        ({"params": {"top_p": -0.1}}, "params.top_p"),
        ({"params": {"max_tokens": "many"}}, "params.max_tokens"),
        ({"id": "has space"}, "id"),
        ({"name": ""}, "name"),
        ({"name": "x" * 300}, "name"),
        ({"meta": {"tags": [f"t{i}" for i in range(40)]}}, "meta.tags"),
        ({"base_model_id": "nowhere:1b"}, "base_model_id"),
    ],
)
def test_invalid_models_are_refused_naming_the_field(registry: Registry, body: dict, field: str) -> None:
    payload = {"id": "m1", "name": "M", "base_model_id": "llama3.1:8b", **body}
    response = registry.client.post("/api/v1/models", json=payload, headers=registry.as_user("alice"))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert field in error["message"]
    assert registry.client.get("/api/v1/models?include_hidden=true", headers=registry.admin).json()["items"] == []


def test_duplicate_id_is_a_conflict(registry: Registry) -> None:
    registry.create(registry.as_user("alice"), id="m1")
    response = registry.client.post(
        "/api/v1/models", json={"id": "m1", "name": "x", "base_model_id": "llama3.1:8b"}, headers=registry.admin
    )
    assert response.status_code == 409 and "already exists" in response.json()["error"]["message"]


def test_auth_is_required(registry: Registry) -> None:
    assert registry.client.get("/api/v1/models").status_code == 401
    bad = registry.client.get("/api/v1/models", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "unauthenticated"
    assert (
        registry.client.post("/api/v1/base-models", json={"id": "x"}, headers=registry.as_user("bob")).status_code
        == 403
    )


def test_access_rules_reader_writer_stranger_admin(registry: Registry) -> None:
    owner = registry.as_user("alice")
    registry.create(
        owner,
        id="shared",
        access={
            "grants": [
                {"principal_type": "user", "principal_id": "reader", "permission": "read"},
                {"principal_type": "group", "principal_id": "editors", "permission": "write"},
            ]
        },
    )
    reader = registry.as_user("reader")
    writer = registry.as_user("wendy", groups=("editors",))
    stranger = registry.as_user("mallory")
    url = "/api/v1/models/shared"

    assert registry.client.get(url, headers=reader).status_code == 200
    denied = registry.client.patch(url, json={"name": "x"}, headers=reader)
    assert denied.status_code == 403 and "write access" in denied.json()["error"]["message"]
    assert registry.client.patch(url, json={"name": "by writer"}, headers=writer).status_code == 200
    assert registry.client.get(url, headers=stranger).status_code == 404
    assert registry.client.delete(url, headers=stranger).status_code == 404
    assert registry.client.delete(url, headers=reader).status_code == 403
    assert [m["id"] for m in registry.client.get("/api/v1/models", headers=stranger).json()["items"]] == []
    assert [m["id"] for m in registry.client.get("/api/v1/models", headers=reader).json()["items"]] == ["shared"]
    assert registry.client.get(url, headers=registry.admin).json()["name"] == "by writer"
    registry.client.patch(url, json={"access": {"public_read": True}}, headers=owner)
    assert registry.client.get(url, headers=stranger).status_code == 200
    assert registry.client.delete(url, headers=registry.admin).status_code == 204


def test_list_filters_search_and_pagination(registry: Registry) -> None:
    alice = registry.as_user("alice")
    for i in range(7):
        registry.create(alice, id=f"model-{i}", name=f"Model {i}", meta={"tags": ["even" if i % 2 == 0 else "odd"]})
    registry.create(alice, id="tutor", name="Python Tutor", meta={"description": "explains code"})
    registry.client.post("/api/v1/models/model-1/hide", headers=alice)
    registry.client.post("/api/v1/models/model-2/disable", headers=alice)

    def ids(query: str) -> list[str]:
        response = registry.client.get(f"/api/v1/models{query}", headers=alice)
        assert response.status_code == 200, response.text
        return [m["id"] for m in response.json()["items"]]

    assert "model-1" not in ids("?limit=100") and "model-2" not in ids("?limit=100")
    assert "model-1" in ids("?include_hidden=true") and "model-2" in ids("?include_disabled=true")
    assert ids("?tag=even") == ["model-0", "model-4", "model-6"]
    assert ids("?q=EXPLAINS") == ["tutor"]
    assert ids("?q=python") == ["tutor"]
    assert ids("?owner=bob") == []

    seen: list[str] = []
    cursor = None
    while True:
        query = "?limit=3&include_hidden=true&include_disabled=true" + (f"&cursor={cursor}" if cursor else "")
        page = registry.client.get(f"/api/v1/models{query}", headers=alice).json()
        seen += [m["id"] for m in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen) and len(seen) == 8
    assert registry.client.get("/api/v1/models?cursor=%%%", headers=alice).status_code == 422


def test_a_list_shows_each_model_as_a_get_does(registry: Registry) -> None:
    # Lists and a get build their answers straight from the rows; a write answers through the model objects.
    alice = registry.as_user("alice")
    registry.create(
        alice,
        id="hf.co/u/rich:Q4",
        name="Rich",
        params={"system": "s", "temperature": 1, "stop": "END", "seed": 7, "custom": {"nested": [1, None, "x"]}},
        meta={
            "description": "d",
            "tags": ["a", {"name": "b"}],
            "knowledge": [{"id": "k1", "name": "Docs"}],
            "toolIds": ["calc"],
            "capabilities": {"vision": True, "citations": False},
            "suggestion_prompts": [{"title": ["t", "sub"], "content": "c"}],
            "profile_image_url": "https://example.com/a.png",
            "extra_key": {"kept": True},
        },
        access={
            "public_read": True,
            "grants": [
                {"principal_type": "user", "principal_id": "bob", "permission": "write"},
                {"principal_type": "group", "principal_id": "team", "permission": "read"},
            ],
        },
        hidden=True,
    )
    registry.create(alice, id="plain")
    registry.client.patch("/api/v1/models/plain", json={"enabled": False, "name": "Plain 2"}, headers=alice)
    png = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    )
    upload = registry.client.put(
        "/api/v1/models/plain/avatar", files={"file": ("a.png", png, "image/png")}, headers=alice
    )
    assert upload.status_code == 200, upload.text
    # A PATCH answers with the file read back through its model object (model_json), as the avatar upload does.
    rich = registry.client.patch("/api/v1/models/hf.co/u/rich:Q4", json={"name": "Rich 2"}, headers=alice)
    assert rich.status_code == 200, rich.text

    listed = registry.client.get(
        "/api/v1/models", params={"include_hidden": True, "include_disabled": True}, headers=alice
    ).json()["items"]
    assert [item["id"] for item in listed] == ["hf.co/u/rich:Q4", "plain"]
    written = {"hf.co/u/rich:Q4": rich.json(), "plain": upload.json()}
    for item in listed:
        got = registry.client.get(f"/api/v1/models/{item['id']}", headers=alice).json()
        assert item == got
        assert got == {k: v for k, v in written[item["id"]].items() if k != "warnings"}


def test_patch_merges_bumps_version_and_keeps_revisions(registry: Registry) -> None:
    alice = registry.as_user("alice")
    registry.create(alice, id="m", params={"temperature": 0.5, "top_p": 0.9, "system": "a"})
    url = "/api/v1/models/m"
    updated = registry.client.patch(url, json={"params": {"temperature": 0.7, "top_p": None}}, headers=alice).json()
    assert updated["version"] == 2
    assert updated["params"] == {"temperature": 0.7, "system": "a"}
    same = registry.client.patch(url, json={"params": {"temperature": 0.7}}, headers=alice).json()
    assert same["version"] == 2, "a patch that changes nothing makes no new version"
    stale = registry.client.patch(url, json={"name": "x"}, headers={**alice, "If-Match": '"1"'})
    assert stale.status_code == 409 and "version 2" in stale.json()["error"]["message"]
    assert registry.client.patch(url, json={"id": "other"}, headers=alice).status_code == 422

    revisions = registry.client.get(f"{url}/revisions", headers=alice).json()["items"]
    assert [r["version"] for r in revisions] == [2, 1]
    assert revisions[0]["changed_fields"] == ["params.temperature", "params.top_p"]
    assert revisions[0]["actor"] == "alice"
    first = registry.client.get(f"{url}/revisions/1", headers=alice).json()
    assert first["model"]["params"]["temperature"] == 0.5
    restored = registry.client.post(f"{url}/revisions/1/restore", headers=alice).json()
    assert restored["version"] == 3 and restored["params"] == {"temperature": 0.5, "top_p": 0.9, "system": "a"}
    assert registry.client.get(f"{url}/revisions/9", headers=alice).status_code == 404


def test_clone_names_and_refuses_base_models(registry: Registry) -> None:
    alice, bob = registry.as_user("alice"), registry.as_user("bob")
    registry.create(alice, id="tutor", name="Tutor", access={"public_read": True})
    first = registry.client.post("/api/v1/models/tutor/clone", headers=bob)
    second = registry.client.post("/api/v1/models/tutor/clone", headers=bob)
    assert first.status_code == 201 and second.status_code == 201
    assert first.json()["id"] == "tutor-clone" and second.json()["id"] == "tutor-clone-2"
    assert first.json()["name"] == "Tutor (Clone)" and first.json()["owner_id"] == "bob"
    assert first.json()["base_model_id"] == "llama3.1:8b", "a clone keeps its base"
    assert first.json()["access"] == {"public_read": False, "grants": []}
    base = registry.client.post("/api/v1/models/llama3.1:8b/clone", headers=alice)
    assert base.status_code == 409 and "create a model file on top of it first" in base.json()["error"]["message"]


def test_hide_unhide_enable_disable(registry: Registry) -> None:
    alice = registry.as_user("alice")
    registry.create(alice, id="m")
    for action, field, value in (("hide", "hidden", True), ("unhide", "hidden", False), ("disable", "enabled", False)):
        response = registry.client.post(f"/api/v1/models/m/{action}", headers=alice)
        assert response.status_code == 200 and response.json()[field] is value
    assert registry.client.get("/api/v1/models/m", headers=alice).json()["enabled"] is False
    assert registry.client.post("/api/v1/models/m/enable", headers=alice).json()["enabled"] is True


def test_chains_cycles_and_delete_with_dependents(registry: Registry) -> None:
    alice = registry.as_user("alice")
    registry.create(alice, id="a", params={"temperature": 0.2, "system": "base prompt", "top_k": 40})
    registry.create(alice, id="b", base_model_id="a", params={"temperature": 0.9})
    cycle = registry.client.patch("/api/v1/models/a", json={"base_model_id": "b"}, headers=alice)
    assert cycle.status_code == 422 and "cycle" in cycle.json()["error"]["message"]

    effective = registry.client.get("/api/v1/models/b/effective", headers=alice).json()
    assert [link["id"] for link in effective["chain"]] == ["b", "a", "llama3.1:8b"]
    assert effective["params"]["temperature"] == {"value": 0.9, "source": "b"}
    assert effective["params"]["system"] == {"value": "base prompt", "source": "a"}
    assert effective["usable"] is True

    blocked = registry.client.delete("/api/v1/models/a", headers=alice)
    assert blocked.status_code == 409 and "b" in blocked.json()["error"]["details"]["dependents"]
    assert registry.client.delete("/api/v1/models/b", headers=alice).status_code == 204
    assert registry.client.delete("/api/v1/models/a", headers=alice).status_code == 204
    assert registry.client.get("/api/v1/models/a", headers=alice).status_code == 404


def test_base_chain_needs_read_access_to_the_base(registry: Registry) -> None:
    registry.create(registry.as_user("alice"), id="private-base")
    response = registry.client.post(
        "/api/v1/models",
        json={"id": "mine", "name": "x", "base_model_id": "private-base"},
        headers=registry.as_user("bob"),
    )
    assert response.status_code == 422 and "cannot read" in response.json()["error"]["message"]
    # A missing base is described in the same words: the answer does not tell whether 'private-base' exists.
    ghost = registry.client.post(
        "/api/v1/models", json={"id": "mine", "name": "x", "base_model_id": "ghost"}, headers=registry.as_user("bob")
    )
    assert ghost.json()["error"]["message"].replace("ghost", "X") == response.json()["error"]["message"].replace(
        "private-base", "X"
    )


def test_base_chain_checks_name_the_problem(registry: Registry) -> None:
    alice = registry.as_user("alice")

    def refused(body: dict[str, object]) -> str:
        response = registry.client.post("/api/v1/models", json={"name": "x", **body}, headers=alice)
        assert response.status_code == 422, response.text
        message: str = response.json()["error"]["message"]
        return message

    assert "required" in refused({"id": "no-base"})
    assert "'ghost' does not exist or you cannot read it" in refused({"id": "m", "base_model_id": "ghost"})
    # A model file with no base of its own stands for the base model of its id, which must exist.
    registry.create(alice, id="llama3.1:8b", base_model_id=None)
    registry.create(alice, id="on-tuned", base_model_id="llama3.1:8b")
    self_base = registry.client.patch("/api/v1/models/on-tuned", json={"base_model_id": "on-tuned"}, headers=alice)
    assert self_base.status_code == 422 and "cycle" in self_base.json()["error"]["message"]

    # A grant to one of the caller's groups is enough to build on a model file.
    registry.create(
        alice,
        id="shared",
        access={"grants": [{"principal_type": "group", "principal_id": "team", "permission": "read"}]},
    )
    registry.create(registry.as_user("bob", groups=("team",)), id="bobs", base_model_id="shared")

    previous = "shared"
    for depth in range(2, 33):
        registry.create(alice, id=f"level-{depth}", base_model_id=previous)
        previous = f"level-{depth}"
    assert "deeper than 32" in refused({"id": "too-deep", "base_model_id": previous})


def test_export_one_all_and_share(registry: Registry) -> None:
    alice = registry.as_user("alice")
    registry.create(alice, id="hf.co/u/r:Q4", name="R", meta={"tags": ["x"]})
    registry.create(alice, id="second", name="S")
    registry.create(registry.as_user("bob"), id="bobs")
    one = registry.client.get("/api/v1/models/hf.co/u/r:Q4/export", headers=alice)
    assert one.status_code == 200
    disposition = one.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="') and "/" not in disposition.split("filename=")[1]
    body = one.json()
    assert isinstance(body, list) and len(body) == 1 and body[0]["id"] == "hf.co/u/r:Q4"
    assert body[0]["meta"]["tags"] == [{"name": "x"}] and body[0]["is_active"] is True
    everything = registry.client.get("/api/v1/models/export", headers=alice)
    assert sorted(m["id"] for m in everything.json()) == ["hf.co/u/r:Q4", "second"]
    share = registry.client.get("/api/v1/models/second/share", headers=alice).json()
    assert share["url"] == "https://openwebui.com/models/create" and share["model"]["id"] == "second"
