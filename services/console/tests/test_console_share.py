"""Sharing over plain HTTP against the real registry and rag service: the owner grants a user read or write,
makes the item public and private again, and removes grants; what the services refuse (a reader changing
access, a writer of a collection changing who has it, a change made meanwhile) is shown on the page."""

from __future__ import annotations

import re
from typing import Any

import httpx
from console_kit import PASSWORD, Stack, token, unique
from test_console_http import page_csrf, signed_in


def _share(client: httpx.Client, path: str, item_id: str, op: str, **fields: Any) -> str:
    """Posts one change from the share page and returns the page it leads back to."""
    csrf = page_csrf(client, f"{path}?id={item_id}")
    response = client.post(path, data={"csrf_token": csrf, "id": item_id, "op": op, **fields})
    assert response.status_code == 303, response.text
    assert response.headers["location"].startswith(path + "?id=")
    page = client.get(response.headers["location"])
    assert page.status_code == 200
    return page.text


def _version(page: str) -> str:
    match = re.search(r'name="version" value="(\d+)"', page)
    assert match
    return match.group(1)


def _model(stack: Stack, model_id: str) -> dict[str, Any]:
    response = stack.http.get(
        f"{stack.registry_url}/api/v1/models/{model_id}", headers={"Authorization": f"Bearer {token()}"}
    )
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


def test_the_owner_shares_a_model_file_with_a_user_makes_it_public_and_private_again(stack: Stack) -> None:
    model = stack.create_model("alice", id=unique("alice-shared"), name="Shared tutor")
    alice = signed_in(stack, username="alice", password=PASSWORD)
    outsider = signed_in(stack, bearer=token(unique("olga"), "user"))
    assert outsider.get("/models/share", params={"id": model["id"]}).status_code == 404

    page = alice.get("/models/share", params={"id": model["id"]})
    assert page.status_code == 200
    assert 'data-public="false"' in page.text and 'id="no-grants"' in page.text
    assert 'href="/models/share?id=' in alice.get("/models", params={"q": model["id"]}).text  # the card's link

    page = _share(
        alice, "/models/share", model["id"], "add", principal_type="user", principal_id="bob", permission="read"
    )
    assert "User bob can now read it." in page
    assert 'data-grant="user:bob" data-permission="read"' in page
    assert _model(stack, model["id"])["access"]["grants"] == [
        {"principal_type": "user", "principal_id": "bob", "permission": "read"}
    ]
    bob = signed_in(stack, bearer=token("bob", "user"))
    assert bob.get("/models/edit", params={"id": model["id"]}).status_code == 200  # bob reads it now

    # bob may read but not change it: the registry's refusal shows on his share page.
    page = _share(bob, "/models/share", model["id"], "public")
    assert "The registry refused: you can read model" in page and "not change it" in page
    assert _model(stack, model["id"])["access"]["public_read"] is False

    # One grant per user: granting write replaces the read grant.
    page = _share(
        alice, "/models/share", model["id"], "add", principal_type="user", principal_id="bob", permission="write"
    )
    assert 'data-grant="user:bob" data-permission="write"' in page and page.count('data-grant="user:bob"') == 1

    page = _share(alice, "/models/share", model["id"], "public")
    assert 'data-public="true"' in page and "Every signed-in user can now read it." in page
    assert outsider.get("/models/share", params={"id": model["id"]}).status_code == 200  # public: readable

    page = _share(alice, "/models/share", model["id"], "remove", principal_type="user", principal_id="bob")
    assert 'data-grant="user:bob"' not in page and "Removed the grant of bob." in page
    page = _share(alice, "/models/share", model["id"], "private")
    assert 'data-public="false"' in page
    assert _model(stack, model["id"])["access"] == {"public_read": False, "grants": []}
    assert outsider.get("/models/share", params={"id": model["id"]}).status_code == 404


def test_a_change_made_meanwhile_and_a_grant_without_an_id_are_refused_on_the_page(stack: Stack) -> None:
    model = stack.create_model("alice", id=unique("alice-stale"), name="Stale")
    alice = signed_in(stack, username="alice", password=PASSWORD)
    stale = _version(alice.get("/models/share", params={"id": model["id"]}).text)
    _share(alice, "/models/share", model["id"], "public")
    page = _share(alice, "/models/share", model["id"], "private", version=stale)
    assert "The registry refused:" in page and f"not {stale}" in page  # "is at version N, not M"
    assert _model(stack, model["id"])["access"]["public_read"] is True

    page = _share(
        alice, "/models/share", model["id"], "add", principal_type="group", principal_id=" ", permission="read"
    )
    assert "Not shared: type the group&#39;s id." in page
    assert _model(stack, model["id"])["access"]["grants"] == []


def test_sharing_a_knowledge_collection_is_for_its_owner(stack: Stack) -> None:
    alice = signed_in(stack, username="alice", password=PASSWORD)
    created = stack.http.post(
        f"{stack.rag_url}/api/v1/knowledge",
        json={"name": unique("Handbook")},
        headers={"Authorization": f"Bearer {token('alice', 'user')}"},
    )
    assert created.status_code == 201, created.text
    knowledge_id = created.json()["id"]
    assert 'href="/knowledge/share?id=' in alice.get("/knowledge/collection", params={"id": knowledge_id}).text

    page = _share(
        alice,
        "/knowledge/share",
        knowledge_id,
        "add",
        principal_type="group",
        principal_id="pullers",
        permission="read",
    )
    assert "Group pullers can now read it." in page and 'data-grant="group:pullers"' in page
    page = _share(
        alice, "/knowledge/share", knowledge_id, "add", principal_type="user", principal_id="bob", permission="write"
    )
    assert 'data-grant="user:bob" data-permission="write"' in page

    # bob may change the collection's files, but only its owner and admins may change who has it.
    bob = signed_in(stack, bearer=token("bob", "user"))
    page = _share(bob, "/knowledge/share", knowledge_id, "public")
    assert "The knowledge service refused: only the owner of knowledge" in page and 'data-public="false"' in page

    page = _share(alice, "/knowledge/share", knowledge_id, "public")
    assert 'data-public="true"' in page
    stored = stack.http.get(
        f"{stack.rag_url}/api/v1/knowledge/{knowledge_id}", headers={"Authorization": f"Bearer {token()}"}
    ).json()
    assert stored["public_read"] is True
    assert {(g["principal_type"], g["principal_id"], g["permission"]) for g in stored["grants"]} == {
        ("group", "pullers", "read"),
        ("user", "bob", "write"),
    }


def test_an_admin_gets_the_directory_as_suggestions(stack: Stack) -> None:
    model = stack.create_model("alice", id=unique("alice-admin"), name="For the admin")
    admin = signed_in(stack, bearer=token())
    page = admin.get("/models/share", params={"id": model["id"]}).text
    assert 'list="directory"' in page and '<option value="bob" label="user">' in page
    assert '<option value="pullers" label="group">' in page
    alice = signed_in(stack, username="alice", password=PASSWORD)
    assert 'list="directory"' not in alice.get("/models/share", params={"id": model["id"]}).text  # not an admin
