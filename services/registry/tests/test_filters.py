"""Filters API against real PostgreSQL and NATS (devstack fixtures): CRUD, strict config validation, admin-only
routes, webhook secrets shown only by the config routes, outbox events, and model files naming unknown filters."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import nats
import psycopg
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from modelhub.events.v1 import events_pb2
from modelhub_common.events import MODELS, decode_envelope

if TYPE_CHECKING:
    from conftest import Registry

SECRET = "hook-secret-" + "s" * 24


@pytest.fixture
def reg(make_registry: Callable[..., Registry]) -> Registry:
    registry = make_registry(tool_refresh_seconds=0)
    registry.add_base()
    with psycopg.connect(registry.settings.database_url.get_secret_value(), autocommit=True) as conn:
        # Every test shares one NATS: keep this database's outbox message ids apart from other tests'.
        conn.execute("SELECT setval('outbox_id_seq', %s)", (random.randrange(10**9, 10**15),))
    return registry


def add_filter(reg: Registry, filter_id: str, kind: str, config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body = {"id": filter_id, "kind": kind, "config": config, **extra}
    response = reg.client.post("/api/v1/filters", json=body, headers=reg.admin)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def _filter_events(nats_url: str, since: datetime, filter_id: str, want: int) -> list[tuple[str, Any]]:
    nc = await nats.connect(nats_url)
    try:
        sub = await nc.jetstream().pull_subscribe(
            "modelhub.models.v1.>",
            durable=None,
            stream=MODELS.stream,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since.isoformat()),
        )
        found: list[tuple[str, Any]] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and len(found) < want:
            try:
                msgs = await sub.fetch(50, timeout=1)
            except TimeoutError:
                continue
            for msg in msgs:
                envelope = decode_envelope(msg.data)
                if envelope.subject_ids.filter_id == filter_id:
                    found.append((msg.subject, envelope))
        return found
    finally:
        await nc.close()


def test_lifecycle_with_outbox_rows_and_events(reg: Registry, nats_url: str) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    created = add_filter(reg, "redact-emails", "redact", {"patterns": ["email"]}, name="No emails")
    assert created["version"] == 1 and created["enabled"] is True and created["direction"] == "both"
    assert created["config"] == {"patterns": ["email"], "replacement": "[redacted]"}
    assert created["has_secret"] is False

    listed = reg.client.get("/api/v1/filters", headers=reg.admin).json()["items"]
    assert [(row["id"], row["kind"], row["direction"], row["enabled"]) for row in listed] == [
        ("redact-emails", "redact", "both", True)
    ]

    patched = reg.client.patch(
        "/api/v1/filters/redact-emails",
        json={"config": {"replacement": "[email]"}, "direction": "inlet"},
        headers=reg.admin,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["config"] == {"patterns": ["email"], "replacement": "[email]"}
    assert patched.json()["version"] == 2 and patched.json()["direction"] == "inlet"
    # The same change again: nothing to write, no new version, no event.
    again = reg.client.patch("/api/v1/filters/redact-emails", json={"direction": "inlet"}, headers=reg.admin)
    assert again.json()["version"] == 2

    config = reg.client.get("/api/v1/filters/redact-emails/config", headers=reg.admin).json()
    assert config["regexes"][0].startswith("[A-Za-z0-9._%+-]") and config["config"]["patterns"] == ["email"]

    with psycopg.connect(reg.settings.database_url.get_secret_value()) as conn:
        subjects = [
            row[0]
            for row in conn.execute(
                "SELECT subject FROM outbox WHERE subject LIKE 'modelhub.models.v1.filter_%%' ORDER BY id"
            ).fetchall()
        ]
    assert subjects == ["modelhub.models.v1.filter_created", "modelhub.models.v1.filter_updated"]

    assert reg.client.delete("/api/v1/filters/redact-emails", headers=reg.admin).status_code == 204
    assert reg.client.get("/api/v1/filters/redact-emails", headers=reg.admin).status_code == 404
    assert reg.client.delete("/api/v1/filters/redact-emails", headers=reg.admin).status_code == 404

    events = asyncio.run(_filter_events(nats_url, since, "redact-emails", want=3))
    assert [
        (subject, payload.filter_changed.version, payload.filter_changed.deleted) for subject, payload in events
    ] == [
        ("modelhub.models.v1.filter_created", 1, False),
        ("modelhub.models.v1.filter_updated", 2, False),
        ("modelhub.models.v1.filter_deleted", 2, True),
    ]
    assert events[0][1].actor.subject == "root"
    assert isinstance(events[0][1].filter_changed, events_pb2.FilterChanged)


def test_webhook_secret_is_shown_only_by_the_config_routes(reg: Registry) -> None:
    hook = {"url": "https://hooks.example.com/filter", "timeout_seconds": 3, "secret": SECRET}
    created = add_filter(reg, "audit-hook", "webhook", hook, direction="outlet")
    assert created["has_secret"] is True and "secret" not in created["config"]
    add_filter(reg, "short", "max_length", {"max_chars": 100}, enabled=False)
    add_filter(reg, "greet", "prepend", {"text": "Hello."})

    shown = [
        reg.client.get("/api/v1/filters", headers=reg.admin).text,
        reg.client.get("/api/v1/filters/audit-hook", headers=reg.admin).text,
        reg.client.patch("/api/v1/filters/audit-hook", json={"name": "Audit"}, headers=reg.admin).text,
    ]
    assert all(SECRET not in text for text in shown)

    one = reg.client.get("/api/v1/filters/audit-hook/config", headers=reg.admin).json()
    assert one["config"] == {"url": "https://hooks.example.com/filter", "timeout_seconds": 3.0, "secret": SECRET}
    assert one["name"] == "Audit" and one["direction"] == "outlet" and one["version"] == 2

    # The batch: in the order asked, unknown and disabled ones absent, duplicates once.
    batch = reg.client.get(
        "/api/v1/filter-configs", params={"ids": "greet,ghost,short,audit-hook,greet"}, headers=reg.admin
    )
    assert batch.status_code == 200, batch.text
    assert [item["id"] for item in batch.json()["items"]] == ["greet", "audit-hook"]
    assert batch.json()["items"][1]["config"]["secret"] == SECRET
    bad = reg.client.get("/api/v1/filter-configs", params={"ids": "greet,Not An Id"}, headers=reg.admin)
    assert bad.status_code == 422 and "Not An Id" in bad.text

    # A merge patch keeps the secret; null clears it.
    kept = reg.client.patch("/api/v1/filters/audit-hook", json={"config": {"timeout_seconds": 4}}, headers=reg.admin)
    assert kept.json()["has_secret"] is True
    cleared = reg.client.patch("/api/v1/filters/audit-hook", json={"config": {"secret": None}}, headers=reg.admin)
    assert cleared.json()["has_secret"] is False
    assert "secret" not in reg.client.get("/api/v1/filters/audit-hook/config", headers=reg.admin).json()["config"]


def test_admin_routes_refuse_normal_users_and_anonymous_callers(reg: Registry) -> None:
    add_filter(reg, "hook", "webhook", {"url": "https://hooks.example.com/f", "secret": SECRET})
    alice = reg.as_user("alice")
    body = {"id": "x", "kind": "append", "config": {"text": "bye"}}
    for method, path in [
        ("post", "/api/v1/filters"),
        ("get", "/api/v1/filters"),
        ("get", "/api/v1/filters/hook"),
        ("get", "/api/v1/filters/hook/config"),
        ("get", "/api/v1/filter-configs?ids=hook"),
        ("patch", "/api/v1/filters/hook"),
        ("delete", "/api/v1/filters/hook"),
    ]:
        kwargs: dict[str, Any] = {"json": body} if method in ("post", "patch") else {}
        refused = reg.client.request(method, path, headers=alice, **kwargs)
        assert refused.status_code == 403, path
        assert SECRET not in refused.text
        assert reg.client.request(method, path, **kwargs).status_code == 401, path
    assert reg.client.get("/api/v1/filters/hook", headers=reg.admin).status_code == 200


def test_bad_filters_are_refused_naming_the_field_and_nothing_is_stored(
    make_registry: Callable[..., Registry],
) -> None:
    reg = make_registry(tool_refresh_seconds=0, max_filter_patterns=2, max_filter_pattern_chars=40)

    def post(**body: Any) -> Any:
        return reg.client.post("/api/v1/filters", json={"id": "f", **body}, headers=reg.admin)

    cases = [
        ({"id": "Bad Id", "kind": "append", "config": {"text": "x"}}, "id"),
        ({"kind": "sql", "config": {}}, "kind"),
        ({"kind": "append", "direction": "sideways", "config": {"text": "x"}}, "direction"),
        ({"kind": "redact", "config": {"patterns": ["(unclosed"]}}, "config.patterns.0"),
        ({"kind": "redact", "config": {"patterns": ["ok", "(a+)+$"]}}, "config.patterns.1"),
        ({"kind": "redact", "config": {"patterns": ["x*"]}}, "empty text"),
        ({"kind": "redact", "config": {"patterns": ["a", "b", "c"]}}, "max_filter_patterns"),
        ({"kind": "redact", "config": {"patterns": ["a" * 41]}}, "max_filter_pattern_chars"),
        ({"kind": "redact", "config": {"patterns": []}}, "config.patterns"),
        ({"kind": "redact", "config": {"patterns": ["a"], "flags": "i"}}, "config.flags"),
        ({"kind": "block", "config": {"patterns": ["a"]}}, "config.message"),
        ({"kind": "prepend", "config": {"text": ""}}, "config.text"),
        ({"kind": "max_length", "config": {"max_chars": 0}}, "config.max_chars"),
        ({"kind": "max_length", "config": {"max_chars": "10"}}, "config.max_chars"),
        ({"kind": "webhook", "config": {"url": "https://h.example.com", "timeout_seconds": 600}}, "timeout_seconds"),
        ({"kind": "webhook", "config": {"url": "ftp://h.example.com/x"}}, "config.url"),
        ({"kind": "webhook", "config": {"url": "https://169.254.169.254/hook"}}, "link-local"),
        ({"kind": "webhook", "config": "https://h.example.com"}, "config"),
    ]
    for body, named in cases:
        response = post(**body)
        assert response.status_code == 422, (body, response.text)
        assert named in response.text, (body, response.text)
    assert reg.client.get("/api/v1/filters", headers=reg.admin).json()["items"] == []

    assert post(kind="append", config={"text": "bye"}).status_code == 201
    duplicate = post(kind="append", config={"text": "bye"})
    assert duplicate.status_code == 409 and "already exists" in duplicate.text

    # A change that breaks a rule is refused and the filter stays as it was.
    broken = reg.client.patch("/api/v1/filters/f", json={"config": {"text": ""}}, headers=reg.admin)
    assert broken.status_code == 422 and "config.text" in broken.text
    kind_only = reg.client.patch("/api/v1/filters/f", json={"kind": "block"}, headers=reg.admin)
    assert kind_only.status_code == 422 and "config" in kind_only.text
    unknown = reg.client.patch("/api/v1/filters/f", json={"version": 9}, headers=reg.admin)
    assert unknown.status_code == 422 and "version" in unknown.text
    switched = reg.client.patch(
        "/api/v1/filters/f", json={"kind": "block", "config": {"patterns": ["x"], "message": "no"}}, headers=reg.admin
    )
    assert switched.status_code == 200 and switched.json()["config"] == {"patterns": ["x"], "message": "no"}
    assert reg.client.get("/api/v1/filters/f", headers=reg.admin).json()["version"] == 2


def test_webhook_urls_follow_the_outbound_policy(make_registry: Callable[..., Registry]) -> None:
    strict = make_registry(tool_refresh_seconds=0, allow_private_urls=False)

    def post(reg: Registry, url: str) -> Any:
        body = {"id": "hook", "kind": "webhook", "config": {"url": url}}
        return reg.client.post("/api/v1/filters", json=body, headers=reg.admin)

    plain = post(strict, "http://93.184.215.14/hook")
    assert plain.status_code == 422 and "https" in plain.text and "config.url" in plain.text
    private = post(strict, "https://10.1.2.3/hook")
    assert private.status_code == 422 and "allow_private_urls" in private.text
    loopback = post(strict, "https://127.0.0.1:8443/hook")
    assert loopback.status_code == 422 and "allow_private_urls" in loopback.text
    assert post(strict, "https://93.184.215.14/hook").status_code == 201

    relaxed = make_registry(tool_refresh_seconds=0, allow_private_urls=True)
    assert post(relaxed, "http://127.0.0.1:9/hook").status_code == 201
    assert post(relaxed, "http://169.254.169.254/latest").status_code == 422


def test_the_number_of_filters_is_limited(make_registry: Callable[..., Registry]) -> None:
    reg = make_registry(tool_refresh_seconds=0, max_filters=1)
    add_filter(reg, "one", "append", {"text": "a"})
    second = reg.client.post(
        "/api/v1/filters", json={"id": "two", "kind": "append", "config": {"text": "b"}}, headers=reg.admin
    )
    assert second.status_code == 409 and "max_filters" in second.text


def test_model_files_naming_unknown_filters_warn(reg: Registry) -> None:
    add_filter(reg, "known", "append", {"text": "bye"})
    alice = reg.as_user("alice")
    created = reg.create(
        alice, id="filtered", meta={"filterIds": ["known", "ghost"], "defaultFilterIds": ["ghost", "phantom"]}
    )
    assert created["meta"]["filter_ids"] == ["known", "ghost"]
    assert created["meta"]["default_filter_ids"] == ["ghost", "phantom"]
    warned = [(w["field"], w["message"].split("'")[1]) for w in created["warnings"]]
    assert warned == [
        ("meta.filterIds", "ghost"),
        ("meta.defaultFilterIds", "ghost"),
        ("meta.defaultFilterIds", "phantom"),
    ]
    assert all("modelhub filters add" in w["message"] for w in created["warnings"])

    quiet = reg.create(alice, id="quiet", meta={"filterIds": ["known"]})
    assert "warnings" not in quiet

    patched = reg.client.patch("/api/v1/models/quiet", json={"meta": {"defaultFilterIds": ["absent"]}}, headers=alice)
    assert patched.status_code == 200
    assert [(w["field"], "absent" in w["message"]) for w in patched.json()["warnings"]] == [
        ("meta.defaultFilterIds", True)
    ]

    document = [
        {
            "id": "imported",
            "base_model_id": "llama3.1:8b",
            "name": "I",
            "meta": {"filterIds": ["known", "missing"], "defaultFilterIds": ["missing"]},
        }
    ]
    report = reg.client.post("/api/v1/models/import", json=document, headers=alice).json()
    assert report["created"] == ["imported"]
    assert [(w["id"], "'missing'" in w["message"]) for w in report["warnings"]] == [("imported", True)]
    stored = reg.client.get("/api/v1/models/imported", headers=alice).json()["meta"]
    assert stored["filter_ids"] == ["known", "missing"]
