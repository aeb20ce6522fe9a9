"""``modelhub users|groups|tokens|connections|base-models`` against a real registry."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from conftest import LiveRegistry


def test_users_groups_and_tokens_round_trip(live_registry: LiveRegistry) -> None:
    reg = live_registry
    assert "added user 'alice' (user)" in reg.ok("users", "add", "alice", "--name", "Alice", "--email", "a@example.com")
    assert "(admin)" in reg.ok("users", "add", "bob", "--name", "Bob", "--admin")
    assert "added group 'support'" in reg.ok("groups", "add", "support", "--name", "Support team")
    reg.ok("groups", "add-member", "support", "alice")

    users = reg.ok("users", "list")
    assert any("alice" in line and "a@example.com" in line and "support" in line for line in users.splitlines())
    groups = json.loads(reg.ok("groups", "list", "--json"))["items"]
    assert [(g["id"], g["name"], g["members"]) for g in groups] == [("support", "Support team", ["alice"])]

    issued = reg.run("tokens", "issue", "alice", "--ttl-days", "7")
    assert issued.exit_code == 0, issued.output
    # stdout holds the token alone, so `TOKEN=$(modelhub tokens issue alice)` captures exactly it.
    token = issued.stdout.strip()
    assert token and "\n" not in token and " " not in token

    # The issued token works for what a user may do, and is refused for what only admins may do.
    reg.ok("models", "create", "--id", "alices-model", "--base", "llama3.1:8b", token=token)
    listed = json.loads(reg.ok("models", "list", "--json", token=token))["items"]
    assert [(m["id"], m["owner_id"]) for m in listed] == [("alices-model", "alice")]
    refused = reg.fails("users", "list", token=token)
    assert "HTTP 403" in refused and "admin" in refused

    reg.ok("groups", "remove-member", "support", "alice")
    assert json.loads(reg.ok("groups", "list", "--json"))["items"][0]["members"] == []
    assert "removed group 'support'" in reg.ok("groups", "rm", "support")
    assert "removed user 'alice'" in reg.ok("users", "rm", "alice")
    assert [u["id"] for u in json.loads(reg.ok("users", "list", "--json"))["items"]] == ["bob"]

    missing = reg.fails("tokens", "issue", "alice")
    assert "HTTP 404" in missing and "modelhub users list" in missing


def test_connections_on_an_empty_registry_and_back(live_registry: LiveRegistry) -> None:
    reg = live_registry
    assert json.loads(reg.ok("connections", "list", "--json")) == {"items": []}
    assert "connections" in reg.ok("connections", "list")

    secret = "sk-do-not-print-1234"
    added = reg.ok(
        "connections",
        "add",
        "--type",
        "openai",
        "--url",
        "http://127.0.0.1:9/v1",
        "--name",
        "gone",
        "--api-key",
        secret,
    )
    assert "added connection" in added and secret not in added
    assert secret not in reg.ok("connections", "list") + reg.ok("connections", "list", "--json")
    [connection] = json.loads(reg.ok("connections", "list", "--json"))["items"]
    assert connection["name"] == "gone" and connection["has_api_key"] is True

    # Nothing listens there: the registry answers 502 and the CLI says what to check.
    failed = reg.fails("connections", "sync", connection["id"])
    assert "HTTP 502" in failed and "check its URL" in failed

    reg.ok("connections", "rm", connection["id"])
    assert json.loads(reg.ok("connections", "list", "--json")) == {"items": []}
    assert "HTTP 404" in reg.fails("connections", "rm", connection["id"])

    bad_type = reg.run("connections", "add", "--type", "llamafile", "--url", "http://x")
    assert bad_type.exit_code == 2


def test_base_models_list(live_registry: LiveRegistry) -> None:
    output = live_registry.ok("base-models", "list")
    assert any("llama3.1:8b" in line and "manual" in line for line in output.splitlines())
    items = json.loads(live_registry.ok("base-models", "list", "--all", "--json"))["items"]
    assert [item["id"] for item in items] == ["llama3.1:8b"]


def test_set_password_then_the_user_signs_in_with_it(live_registry: LiveRegistry) -> None:
    reg = live_registry
    reg.ok("users", "add", "carol", "--name", "Carol")
    typed = reg.run("users", "set-password", "carol", input="a long password of carol\na long password of carol\n")
    assert typed.exit_code == 0 and "password of 'carol' set" in typed.output
    assert "a long password" not in typed.output  # not echoed
    login = httpx.post(
        f"{reg.url}/api/v1/auth/login", json={"username": "carol", "password": "a long password of carol"}
    )
    assert login.status_code == 200 and login.json()["token"]
    short = reg.run("users", "set-password", "carol", "--password-stdin", input="short\n")
    assert short.exit_code == 1 and "HTTP 422" in short.output and "password" in short.output
