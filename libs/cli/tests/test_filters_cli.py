"""``modelhub filters ...`` against a real registry."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import LiveRegistry

HOOK_SECRET = "hook-secret-" + "c" * 24


def body_rows(table: str) -> list[list[str]]:
    """The cells of each body row of a rich table (rows are drawn with "│")."""
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in table.splitlines() if line.startswith("│")]


def test_add_list_show_rm(live_registry: LiveRegistry) -> None:
    added = live_registry.ok("filters", "add", "redact-emails", "--kind", "redact", "--pattern", "email")
    assert "added redact filter 'redact-emails'" in added and 'meta.filterIds: ["redact-emails"]' in added
    live_registry.ok(
        "filters",
        "add",
        "no-secrets",
        "--kind",
        "block",
        "--pattern",
        "sk-[A-Za-z0-9]{20,}",
        "--pattern",
        "api_key",
        "--message",
        "Remove the API key first.",
        "--direction",
        "inlet",
        "--name",
        "No secrets",
    )
    live_registry.ok("filters", "add", "short", "--kind", "max_length", "--max-chars", "2000", "--disabled")

    rows = body_rows(live_registry.ok("filters", "list"))
    assert [row[:5] for row in rows] == [
        ["no-secrets", "No secrets", "block", "inlet", "yes"],
        ["redact-emails", "redact-emails", "redact", "both", "yes"],
        ["short", "short", "max_length", "both", "no"],
    ]

    shown = live_registry.ok("filters", "show", "no-secrets")
    assert "sk-[A-Za-z0-9]{20,}, api_key: Remove the API key first." in shown
    assert "the user's message" in shown
    as_json = json.loads(live_registry.ok("filters", "show", "no-secrets", "--json"))
    assert as_json["config"]["patterns"] == ["sk-[A-Za-z0-9]{20,}", "api_key"]

    assert "removed filter 'short'" in live_registry.ok("filters", "rm", "short")
    missing = live_registry.fails("filters", "show", "short")
    assert "short" in missing and "does not exist" in missing


def test_a_webhook_secret_comes_from_the_environment_and_is_never_shown(live_registry: LiveRegistry) -> None:
    unset = live_registry.fails(
        "filters",
        "add",
        "audit-hook",
        "--kind",
        "webhook",
        "--url",
        "https://audit.example.com/f",
        "--secret-env",
        "HOOK_SECRET",
    )
    assert "HOOK_SECRET" in unset and "export HOOK_SECRET" in unset

    live_registry.extra_env["HOOK_SECRET"] = HOOK_SECRET
    added = live_registry.ok(
        "filters",
        "add",
        "audit-hook",
        "--kind",
        "webhook",
        "--url",
        "https://audit.example.com/f",
        "--secret-env",
        "HOOK_SECRET",
        "--timeout",
        "3",
        "--direction",
        "outlet",
    )
    assert "added webhook filter 'audit-hook' on the answer" in added
    outputs = [
        live_registry.ok("filters", "list"),
        live_registry.ok("filters", "list", "--json"),
        live_registry.ok("filters", "show", "audit-hook"),
        live_registry.ok("filters", "show", "audit-hook", "--json"),
    ]
    assert all(HOOK_SECRET not in output for output in outputs)
    assert "secret set" in outputs[2] and body_rows(outputs[0])[0][5] == "set"
    with live_registry.api() as api:
        config = api.get("/api/v1/filters/audit-hook/config").json()
    assert config["config"]["secret"] == HOOK_SECRET and config["config"]["timeout_seconds"] == 3.0


def test_mistakes_say_what_to_do(live_registry: LiveRegistry) -> None:
    stray = live_registry.fails("filters", "add", "x", "--kind", "prepend", "--text", "hi", "--pattern", "email")
    assert "--pattern does not apply to a prepend filter" in stray and "takes --text" in stray
    missing = live_registry.fails("filters", "add", "x", "--kind", "block", "--pattern", "bad")
    assert "needs --message" in missing
    bad_regex = live_registry.fails("filters", "add", "x", "--kind", "redact", "--pattern", "(unclosed")
    assert "config.patterns.0" in bad_regex and "regular expression" in bad_regex
    plain = live_registry.fails("filters", "add", "x", "--kind", "webhook", "--url", "ftp://example.com/hook")
    assert "config.url" in plain
    live_registry.ok("filters", "add", "x", "--kind", "append", "--text", "bye")
    again = live_registry.fails("filters", "add", "x", "--kind", "append", "--text", "bye")
    assert "already exists" in again
    assert body_rows(live_registry.ok("filters", "list"))[0][0] == "x"


def test_normal_users_are_refused(live_registry: LiveRegistry, make_token: Callable[..., str]) -> None:
    bob = make_token("bob", "user")
    refused = live_registry.fails("filters", "list", token=bob)
    assert "403" in refused
    refused_add = live_registry.fails("filters", "add", "mine", "--kind", "append", "--text", "x", token=bob)
    assert "403" in refused_add
    assert body_rows(live_registry.ok("filters", "list")) == []
