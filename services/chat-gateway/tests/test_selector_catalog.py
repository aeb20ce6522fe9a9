"""The model selector's catalog: held in memory by each gateway replica, kept current by the registry's events.

* the index filters as :func:`modelhub_common.auth.may_read` and the base chain rule say (no servers);
* the catalog's version rules against a small fake of our registry client (redelivery, reordering,
  tombstones, an id created again);
* a real gateway and registry: after a burst of creates, hides, grant changes and deletes, with events
  redelivered and reordered on purpose, ``ListModels`` and ``GET /v1/models`` for an owner, a group member,
  a stranger and an admin equal what the registry's own lists give the same tokens;
* a gateway started before its registry becomes ready once the registry is up, and reloads its catalog
  when it may have missed events (its consumer deleted, NATS restarted, a gap in the stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import httpx
import nats
import pytest
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from modelhub.chat.v1 import chat_pb2, chat_pb2_grpc
from modelhub.events.v1 import events_pb2
from modelhub_chat_gateway import bootstrap
from modelhub_chat_gateway.service_layer.selector_catalog import SelectorCatalog, SelectorIndex
from modelhub_chat_gateway.settings import ChatGatewaySettings
from modelhub_common.auth import Principal, issue_token, may_read
from modelhub_common.events import MODELS, EventEnvelope, new_envelope
from modelhub_devstack.asgi import serve_in_thread
from modelhub_devstack.databases import create_database, database_url
from modelhub_devstack.nats import NatsServer
from modelhub_devstack.ports import pick_free_port
from modelhub_registry import bootstrap as registry_bootstrap
from modelhub_registry.settings import RegistrySettings

if TYPE_CHECKING:
    from conftest import Gateway, RegistryHandle
    from modelhub_chat_gateway.adapters.backends.local_llama import LocalLlamaBackend

A = "echo-a:latest"
T = TypeVar("T")
#: Generous: the machine is shared; a wait that ends early costs nothing.
CONVERGE_SECONDS = 60.0


def _uid() -> str:
    return uuid.uuid4().hex[:8]


# ---------------------------------------------------------------------------------------------------------
# The index alone


def _brute_force(
    files: dict[str, dict[str, Any]], bases: list[dict[str, Any]], who: Principal, hidden: bool, disabled: bool
) -> list[str]:
    """The selector by the definition: may_read per file, every model file of the chain readable, then bases."""

    def readable(model_id: str) -> bool:
        f = files[model_id]
        grants = [_GrantView(**g) for g in f["access"]["grants"]]
        return may_read(who, owner_id=f["owner_id"], public_read=f["access"]["public_read"], grants=grants)

    def chain_ok(model_id: str) -> bool:
        seen = {model_id}
        below = files[model_id]["base_model_id"]
        while below in files and below not in seen:
            if not readable(below):
                return False
            seen.add(below)
            below = files[below]["base_model_id"]
        return True

    shown = [
        i
        for i in sorted(files)
        if readable(i) and (hidden or not files[i]["hidden"]) and (disabled or files[i]["enabled"]) and chain_ok(i)
    ]
    listed = set(shown)
    return shown + sorted(b["id"] for b in bases if b["available"] and b["id"] not in listed)


@dataclass(frozen=True)
class _GrantView:
    principal_type: str
    principal_id: str
    permission: str


def test_index_lists_what_may_read_and_the_base_chain_allow() -> None:
    rng = random.Random(17)
    users = [f"u{n}" for n in range(6)]
    groups = [f"g{n}" for n in range(4)]
    bases = [{"id": f"base-{n}", "source": "ollama", "available": n != 3} for n in range(5)]
    files: dict[str, dict[str, Any]] = {}
    for n in range(300):
        model_id = f"m{n:03d}"
        below = rng.choice([*(b["id"] for b in bases), *files, *files, "nowhere:latest"])
        grants = [
            {
                "principal_type": (kind := rng.choice(["user", "group"])),
                "principal_id": rng.choice(users if kind == "user" else groups),
                "permission": rng.choice(["read", "write"]),
            }
            for _ in range(rng.choice([0, 0, 1, 2]))
        ]
        files[model_id] = {
            "id": model_id,
            "name": f"Model {n}",
            "base_model_id": below,
            "owner_id": rng.choice(users),
            "access": {"public_read": rng.random() < 0.3, "grants": grants},
            "hidden": rng.random() < 0.1,
            "enabled": rng.random() > 0.1,
            "version": 1,
            "meta": {},
        }
    # A file with a base model's id overrides that base for whoever it is listed to.
    files["base-1"] = {**files["m000"], "id": "base-1", "base_model_id": None, "owner_id": "u0"}
    files["base-1"]["access"] = {"public_read": False, "grants": []}
    index = SelectorIndex()
    index.set_bases(bases)
    for raw in files.values():
        index.put_file(raw)
    # Changes after the first load go through the same paths.
    for model_id in rng.sample(sorted(files), 40):
        if rng.random() < 0.5:
            files[model_id] = {**files[model_id], "hidden": not files[model_id]["hidden"], "version": 2}
            index.put_file(files[model_id])
        elif not any(f["base_model_id"] == model_id for f in files.values()):
            del files[model_id]
            assert index.remove_file(model_id)

    principals = [Principal("root", "admin")] + [
        Principal(u, "user", frozenset(rng.sample(groups, rng.choice([0, 1, 2])))) for u in users for _ in range(3)
    ]
    principals.append(Principal("nobody", "user"))
    for who in principals:
        for hidden, disabled in ((False, False), (True, True), (True, False)):
            listed = [m.id for m in index.listings(who, include_hidden=hidden, include_disabled=disabled)]
            assert listed == _brute_force(files, bases, who, hidden, disabled), (who, hidden, disabled)
        response = chat_pb2.ListModelsResponse.FromString(
            index.protobuf(who, include_hidden=False, include_disabled=False)
        )
        assert [m.id for m in response.models] == _brute_force(files, bases, who, False, False)
        as_json = json.loads(index.json(who))
        assert [m["id"] for m in as_json["data"]] == _brute_force(files, bases, who, False, False)
        assert as_json["object"] == "list"


def test_index_answers_kept_for_a_caller_follow_every_change() -> None:
    """Encoded answers are reused while nothing changes; every kind of change is seen by the next answer."""
    bases = [
        {"id": "base-0", "source": "ollama", "available": True},
        {"id": "base-1", "source": "hf", "available": True},
    ]

    def raw(model_id: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": model_id,
            "name": model_id,
            "base_model_id": "base-0",
            "owner_id": "u0",
            "access": {
                "public_read": False,
                "grants": [{"principal_type": "group", "principal_id": "g0", "permission": "read"}],
            },
            "hidden": False,
            "enabled": True,
            "version": 1,
            "meta": {},
            **extra,
        }

    index = SelectorIndex()
    index.set_bases(bases)
    for n in range(5):
        index.put_file(raw(f"m{n}"))
    admin, member, other = (
        Principal("root", "admin"),
        Principal("u1", "user", frozenset({"g0"})),
        Principal("u1", "user"),
    )

    def ids(who: Principal) -> list[str]:
        listed = chat_pb2.ListModelsResponse.FromString(
            index.protobuf(who, include_hidden=False, include_disabled=False)
        )
        from_json = [m["id"] for m in json.loads(index.json(who))["data"]]
        assert [m.id for m in listed.models] == from_json
        return from_json

    everything = ["m0", "m1", "m2", "m3", "m4", "base-0", "base-1"]
    assert ids(admin) == ids(member) == everything
    assert index.protobuf(admin, include_hidden=False, include_disabled=False) is index.protobuf(
        admin, include_hidden=False, include_disabled=False
    ), "asked again with nothing changed: the same bytes"
    assert ids(other) == ["base-0", "base-1"], "the same subject in other groups is another caller"

    index.put_file(raw("m1", hidden=True, version=2))
    assert "m1" not in ids(admin) and "m1" not in ids(member)
    assert index.remove_file("m2")
    assert ids(admin) == ["m0", "m3", "m4", "base-0", "base-1"]
    index.put_file(raw("m5", access={"public_read": True, "grants": []}))
    assert ids(other) == ["m5", "base-0", "base-1"]
    index.set_bases([bases[0]])
    assert ids(member) == ["m0", "m3", "m4", "m5", "base-0"]
    listed = chat_pb2.ListModelsResponse.FromString(index.protobuf(member, include_hidden=True, include_disabled=True))
    assert [m.id for m in listed.models] == ["m0", "m1", "m3", "m4", "m5", "base-0"]


# ---------------------------------------------------------------------------------------------------------
# The catalog's rules, against a small fake of our registry client


class FakeRegistry:
    """What SelectorCatalog needs from RegistryClient, with model files in a dict; counts fetches."""

    def __init__(self) -> None:
        self.files: dict[str, dict[str, Any]] = {}
        self.bases: list[dict[str, Any]] = [{"id": A, "source": "ollama", "available": True}]
        self.fetched: list[str] = []

    def put(self, model_id: str, version: int, **extra: Any) -> None:
        self.files[model_id] = {
            "id": model_id,
            "name": extra.pop("name", model_id),
            "base_model_id": A,
            "owner_id": "alice",
            "access": {"public_read": True, "grants": []},
            "version": version,
            **extra,
        }

    async def all_models(self, *, page_size: int) -> AsyncIterator[list[dict[str, Any]]]:
        ordered = [self.files[k] for k in sorted(self.files)]
        for start in range(0, len(ordered), page_size):
            yield [dict(f) for f in ordered[start : start + page_size]]

    async def any_model(self, model_id: str) -> dict[str, Any] | None:
        self.fetched.append(model_id)
        found = self.files.get(model_id)
        return dict(found) if found else None

    async def all_base_models(self) -> list[dict[str, Any]]:
        return [dict(b) for b in self.bases]


def _changed(event: str, model_id: str, version: int, at: datetime) -> EventEnvelope:
    payload = events_pb2.ModelChanged(model_id=model_id, base_model_id=A, version=version, enabled=True)
    return new_envelope(
        MODELS.subject(event), actor="alice", role="user", source="registry", payload=payload, occurred_at=at
    )


def _deleted(model_id: str, last_version: int, at: datetime) -> EventEnvelope:
    payload = events_pb2.ModelDeleted(model_id=model_id, last_version=last_version)
    return new_envelope(
        MODELS.subject("deleted"), actor="alice", role="user", source="registry", payload=payload, occurred_at=at
    )


async def test_catalog_applies_events_by_version_and_remembers_deletions() -> None:
    registry = FakeRegistry()
    registry.put("kept", 3)
    registry.put("gone", 2)
    catalog = SelectorCatalog(registry, page_size=1)  # type: ignore[arg-type]
    stop = asyncio.Event()
    runner = asyncio.create_task(catalog.run(stop))
    admin = Principal("root", "admin")

    def names() -> dict[str, str]:
        index = catalog._index
        return {m.id: m.name for m in index.listings(admin, include_hidden=True, include_disabled=True) if m.id != A}

    try:
        catalog.request_resync("start")
        await catalog.wait_idle()
        assert names() == {"kept": "kept", "gone": "gone"} and catalog.stats.resyncs == 1
        t0 = datetime.now(UTC)

        # Redelivered and overtaken events change nothing and fetch nothing.
        for event in (_changed("created", "kept", 1, t0), _changed("updated", "kept", 3, t0)):
            catalog.submit(event)
        await catalog.wait_idle()
        assert registry.fetched == [] and catalog.stats.events_skipped == 2

        # A newer version is fetched; several events about one model in a round cost one fetch.
        registry.put("kept", 5, name="kept v5")
        for version in (4, 5):
            catalog.submit(_changed("updated", "kept", version, t0 + timedelta(seconds=version)))
        await catalog.wait_idle()
        assert names()["kept"] == "kept v5" and registry.fetched == ["kept"]

        # A deletion, then a change from before it that arrives late: the model stays gone, unfetched.
        del registry.files["gone"]
        catalog.submit(_deleted("gone", 2, t0 + timedelta(seconds=10)))
        await catalog.wait_idle()
        assert "gone" not in names()
        fetches = len(registry.fetched)
        catalog.submit(_changed("updated", "gone", 2, t0 + timedelta(seconds=9)))
        catalog.submit(_deleted("gone", 2, t0 + timedelta(seconds=10)))
        await catalog.wait_idle()
        assert "gone" not in names() and len(registry.fetched) == fetches

        # The same id created again (its versions start at 1 again) comes back; the old deletion, redelivered,
        # does not remove the new model: the registry is asked and still has it.
        registry.put("gone", 1, name="gone again")
        catalog.submit(_changed("created", "gone", 1, t0 + timedelta(seconds=20)))
        await catalog.wait_idle()
        assert names()["gone"] == "gone again"
        catalog.submit(_deleted("gone", 2, t0 + timedelta(seconds=10)))
        await catalog.wait_idle()
        assert names()["gone"] == "gone again"

        # A base model event re-reads the base models (they carry no version).
        registry.bases.append({"id": "new-base:1b", "source": "local", "available": True})
        base_event = new_envelope(
            MODELS.subject("base_model_registered"),
            actor="root",
            role="admin",
            source="registry",
            payload=events_pb2.ModelChanged(model_id="new-base:1b", version=1, is_base=True, enabled=True),
        )
        catalog.submit(base_event)
        await catalog.wait_idle()
        listed = catalog._index.listings(admin, include_hidden=False, include_disabled=False)
        assert "new-base:1b" in {m.id for m in listed}
    finally:
        stop.set()
        await runner


# ---------------------------------------------------------------------------------------------------------
# Against a real gateway and registry


def _bearer(secret: str, subject: str, role: str = "user", groups: tuple[str, ...] = ()) -> str:
    return issue_token(secret, subject=subject, role=role, groups=groups, ttl_seconds=3600)


def _pages(http: httpx.Client, token: str, *, hidden: bool, disabled: bool) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {
            "include_hidden": str(hidden).lower(),
            "include_disabled": str(disabled).lower(),
            "limit": 200,
        }
        if cursor:
            params["cursor"] = cursor
        response = http.get("/api/v1/models", params=params, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["items"]
        cursor = body.get("next_cursor")
        if not cursor:
            return items


Row = tuple[str, str, bool, bool, str, str]


def registry_selector(http: httpx.Client, token: str, admin: str, *, hidden: bool, disabled: bool) -> list[Row]:
    """What the selector must show for ``token``, from the registry's own answers to that token: its list of
    model files, less those built (through any number of model files) on one it does not list for the token
    at all, then the base models it lists that no listed file overrides."""
    listed = _pages(http, token, hidden=hidden, disabled=disabled)
    readable = {m["id"] for m in _pages(http, token, hidden=True, disabled=True)}
    below = {m["id"]: m["base_model_id"] for m in _pages(http, admin, hidden=True, disabled=True)}

    def chain_ok(model_id: str) -> bool:
        seen = {model_id}
        link = below.get(model_id)
        while link in below and link not in seen:
            if link not in readable:
                return False
            seen.add(link)
            link = below[link]
        return True

    response = http.get("/api/v1/base-models", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    bases = response.json()["items"]
    source = {b["id"]: b["source"] for b in bases}
    rows: list[Row] = []
    for m in listed:
        if chain_ok(m["id"]):
            base = m["base_model_id"] or m["id"]
            rows.append((m["id"], m["name"], m["hidden"], m["enabled"], base, source.get(base, "")))
    shown = {r[0] for r in rows}
    rows += [(b["id"], b["name"] or b["id"], False, True, b["id"], b["source"]) for b in bases if b["id"] not in shown]
    return rows


async def gateway_selector(
    stub: chat_pb2_grpc.ChatServiceStub, token: str, *, hidden: bool, disabled: bool
) -> list[Row]:
    reply = await stub.ListModels(
        chat_pb2.ListModelsRequest(include_hidden=hidden, include_disabled=disabled),
        metadata=[("authorization", f"Bearer {token}")],
        timeout=30,
    )
    return [(m.id, m.name, m.hidden, m.enabled, m.base_model_id, m.source) for m in reply.models]


async def converged(
    stub: chat_pb2_grpc.ChatServiceStub, http: httpx.Client, tokens: dict[str, str], admin: str
) -> dict[str, tuple[list[Row], list[Row]]]:
    """Waits until the gateway's selector equals the registry's for every token (both flag settings);
    returns the last differing pair per token and setting (empty when they all agree)."""
    deadline = time.monotonic() + CONVERGE_SECONDS
    while True:
        differ: dict[str, tuple[list[Row], list[Row]]] = {}
        for who, token in tokens.items():
            for hidden, disabled in ((False, False), (True, True)):
                expected = await asyncio.to_thread(
                    registry_selector, http, token, admin, hidden=hidden, disabled=disabled
                )
                got = await gateway_selector(stub, token, hidden=hidden, disabled=disabled)
                if got != expected:
                    differ[f"{who} hidden={hidden} disabled={disabled}"] = (got, expected)
        if not differ or time.monotonic() > deadline:
            return differ
        await asyncio.sleep(0.2)


def _describe(differ: dict[str, tuple[list[Row], list[Row]]]) -> str:
    lines = []
    for what, (got, expected) in differ.items():
        lines.append(f"{what}: only in the gateway {sorted(set(got) - set(expected))}")
        lines.append(f"{what}: only in the registry {sorted(set(expected) - set(got))}")
    return "\n".join(lines)


def _gateway_loop(app: Any) -> asyncio.AbstractEventLoop:
    """The event loop the gateway's lifespan runs on (uvicorn's thread)."""
    loop: asyncio.AbstractEventLoop = app.state.runtime.tasks[0].get_loop()
    return loop


async def on_gateway(app: Any, work: Coroutine[Any, Any, T]) -> T:
    """Runs ``work`` on the gateway's own loop (its catalog is not thread-safe) and waits for it here."""
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, _gateway_loop(app)))


@contextlib.asynccontextmanager
async def recorded_events(nats_url: str) -> AsyncIterator[list[bytes]]:
    """Every model event published while the block runs, as raw envelopes."""
    seen: list[bytes] = []
    nc = await nats.connect(nats_url)

    async def keep(msg: Msg) -> None:
        seen.append(msg.data)

    try:
        sub = await nc.jetstream().subscribe(
            MODELS.subject(">"),
            stream=MODELS.stream,
            cb=keep,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
        )
        yield seen
        await sub.unsubscribe()
    finally:
        await nc.close()


async def redeliver(app: Any, events: list[bytes], rng: random.Random) -> None:
    """Hands old events to the gateway's listener again, shuffled, and waits until the catalog took them."""
    listener = app.state.model_events
    shuffled = list(events)
    rng.shuffle(shuffled)
    for data in shuffled:
        await on_gateway(app, listener.handle(data))
    await on_gateway(app, app.state.selector.wait_idle())


async def test_catalog_converges_with_the_registry_after_a_burst_with_redeliveries(
    gateway: Gateway, registry: RegistryHandle, gateway_nats_url: str, gateway_jwt_secret: str
) -> None:
    uid = _uid()
    rng = random.Random(uid)
    owner, member, stranger, team = f"owner-{uid}", f"member-{uid}", f"stranger-{uid}", f"team-{uid}"
    secret = gateway_jwt_secret
    admin = _bearer(secret, "root", "admin")
    tokens = {
        "owner": _bearer(secret, owner),
        "group member": _bearer(secret, member, groups=(team,)),
        "stranger": _bearer(secret, stranger),
        "admin": admin,
    }
    as_admin = {"Authorization": f"Bearer {admin}"}
    as_owner = {"Authorization": f"Bearer {tokens['owner']}"}
    await on_gateway(gateway.app, gateway.app.state.selector.loaded_event.wait())

    def model(name: str, **body: Any) -> str:
        model_id = f"sel-{name}-{uid}"
        body.setdefault("base_model_id", A)
        body.setdefault("access", {"public_read": False})
        registry.create_model(owner, "user", id=model_id, **body)
        return model_id

    def patch(model_id: str, body: dict[str, Any]) -> None:
        registry.patch_model(model_id, body, owner, "user")

    def delete(model_id: str) -> None:
        response = registry.http.delete(f"/api/v1/models/{model_id}", headers=as_owner)
        assert response.status_code == 204, response.text

    def base(base_id: str) -> None:
        response = registry.http.post(
            "/api/v1/base-models", json={"id": base_id, "source": "manual", "name": base_id}, headers=as_admin
        )
        assert response.status_code == 201, response.text

    group_read = {"principal_type": "group", "principal_id": team, "permission": "read"}
    member_write = {"principal_type": "user", "principal_id": member, "permission": "write"}
    async with recorded_events(gateway_nats_url) as events:
        private = [model(f"private{n}") for n in range(4)]
        public = [model(f"public{n}", access={"public_read": True}) for n in range(3)]
        grouped = model("grouped", access={"public_read": False, "grants": [group_read]})
        granted = model("granted", access={"public_read": False, "grants": [member_write]})
        hidden = model("hidden", hidden=True, access={"public_read": True})
        disabled = model("disabled", enabled=False, access={"public_read": True})
        # Public, but built on files that only some may read: the chain decides.
        on_private = model("on-private", base_model_id=private[0], access={"public_read": True})
        on_grouped = model("on-grouped", base_model_id=grouped, access={"public_read": True})
        on_chain = model("on-chain", base_model_id=on_grouped, access={"public_read": True})
        # A base model, and a private model file with its id that overrides it for whoever may read the file.
        overridden, removed = f"sel-base-{uid}:1b", f"sel-gone-{uid}:1b"
        base(overridden)
        base(removed)
        model("override-unused")  # keeps the burst mixed
        registry.create_model(owner, "user", id=overridden, access={"public_read": False})

        # Halfway: what was published so far, again and in another order.
        await redeliver(gateway.app, list(events), rng)

        patch(public[0], {"hidden": True})
        patch(private[1], {"access": {"grants": [group_read]}})
        patch(grouped, {"access": {"grants": []}})  # the group loses it, and with it on-grouped and on-chain
        patch(private[2], {"access": {"public_read": True}, "name": "now public"})
        patch(hidden, {"hidden": False})
        patch(disabled, {"enabled": True})
        patch(granted, {"enabled": False})
        delete(private[3])
        delete(public[1])
        response = registry.http.delete(f"/api/v1/base-models/{removed}", headers=as_admin)
        assert response.status_code == 204, response.text
        patch(on_chain, {"name": "renamed"})

        differ = await converged(gateway.stub, registry.http, tokens, admin)
        assert not differ, _describe(differ)
        ids = {r[0] for r in await gateway_selector(gateway.stub, tokens["stranger"], hidden=False, disabled=False)}
        assert on_private not in ids and on_chain not in ids and overridden in ids and removed not in ids
        assert private[2] in ids and public[1] not in ids and hidden in ids

    # Every event of the burst again, shuffled: nothing rolls back, nothing is resurrected.
    skipped = gateway.app.state.selector.stats.events_skipped
    await redeliver(gateway.app, list(events), rng)
    assert gateway.app.state.selector.stats.events_skipped > skipped
    for who, token in tokens.items():
        for hidden_too in (False, True):
            expected = await asyncio.to_thread(
                registry_selector, registry.http, token, admin, hidden=hidden_too, disabled=hidden_too
            )
            got = await gateway_selector(gateway.stub, token, hidden=hidden_too, disabled=hidden_too)
            assert got == expected, f"{who}: {_describe({who: (got, expected)})}"

    # The OpenAI-compatible list is the same selector (hidden and disabled left out).
    for who, token in tokens.items():
        response = httpx.get(f"{gateway.http_url}/v1/models", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        rows = await asyncio.to_thread(registry_selector, registry.http, token, admin, hidden=False, disabled=False)
        expected_ids = [r[0] for r in rows]
        assert [m["id"] for m in response.json()["data"]] == expected_ids, who


# ---------------------------------------------------------------------------------------------------------
# A gateway started before its registry; events missed


@dataclass
class LateStack:
    """A NATS and a registry of this test's own (a second registry on the shared NATS would reuse the
    session registry's Nats-Msg-Ids), and a gateway started before the registry."""

    nats: NatsServer
    registry_settings: RegistrySettings
    registry_port: int
    gateway_app: Any
    gateway_url: str
    stub: chat_pb2_grpc.ChatServiceStub


@pytest.fixture
def late_nats(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(tmp_path / "nats") as server:
        yield server


def _wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + CONVERGE_SECONDS
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.1)


async def _wait_for_async(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + CONVERGE_SECONDS
    while not await check():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        await asyncio.sleep(0.1)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


async def test_gateway_started_before_its_registry_gets_ready_and_resyncs_after_missed_events(
    late_nats: NatsServer,
    s3: Any,
    pg_url: str,
    postgres_admin_url: str,
    local_backend: LocalLlamaBackend,
    gateway_jwt_secret: str,
) -> None:
    secret = gateway_jwt_secret
    admin = _bearer(secret, "root", "admin")
    as_admin = {"Authorization": f"Bearer {admin}"}
    registry_port = pick_free_port()
    registry_url = f"http://127.0.0.1:{registry_port}"
    gateway_settings = ChatGatewaySettings(
        host="127.0.0.1",
        port=0,
        grpc_port=0,
        nats_url=late_nats.url,
        jwt_secret=secret,
        database_url=pg_url,
        s3_endpoint=s3.endpoint,
        s3_access_key=s3.access_key,
        s3_secret_key=s3.secret_key,
        s3_secure=s3.secure,
        registry_url=registry_url,
        rag_url="http://127.0.0.1:9",
        shutdown_grace_seconds=2,
        health_check_seconds=0.2,
        catalog_retry_seconds=0.2,
        catalog_check_seconds=0.3,
        catalog_wait_seconds=0.2,
        registry_timeout_seconds=5,
    )
    await bootstrap.run_migrations(gateway_settings)
    name = f"late_registry_{_uid()}"
    create_database(postgres_admin_url, name)
    registry_settings = RegistrySettings(
        host="127.0.0.1",
        port=registry_port,
        nats_url=late_nats.url,
        jwt_secret=secret,
        database_url=database_url(postgres_admin_url, name),
        s3_endpoint=s3.endpoint,
        s3_access_key=s3.access_key,
        s3_secret_key=s3.secret_key,
        s3_secure=s3.secure,
        connection_sync_seconds=0,
        shutdown_grace_seconds=1,
    )
    await registry_bootstrap.run_migrations(registry_settings)
    app = bootstrap.build_app(gateway_settings, local_backend=local_backend)
    serve = {"log_level": "warning", "lifespan": "on", "timeout_graceful_shutdown": 2}
    with contextlib.ExitStack() as servers:
        gateway_url = servers.enter_context(serve_in_thread(app, name="late-gateway", **serve))
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.state.grpc_port}")
        servers.callback(lambda: None)
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        try:
            # No registry yet: not ready (the catalog says why), and the selector is unavailable.
            response = httpx.get(f"{gateway_url}/readyz", timeout=10)
            assert response.status_code == 503
            assert response.json()["checks"]["catalog"].startswith("failing")
            with pytest.raises(grpc.aio.AioRpcError) as unavailable:
                await gateway_selector(stub, admin, hidden=False, disabled=False)
            assert unavailable.value.code() == grpc.StatusCode.UNAVAILABLE

            registry_url = servers.enter_context(
                serve_in_thread(
                    registry_bootstrap.build_app(registry_settings), name="late-registry", port=registry_port, **serve
                )
            )
            with httpx.Client(base_url=registry_url, headers=as_admin) as http:
                response = http.post("/api/v1/base-models", json={"id": "late-base:1b", "source": "manual"})
                assert response.status_code == 201, response.text
                await asyncio.to_thread(_wait_for, lambda: _ready(gateway_url), "the gateway to become ready")
                assert app.state.selector.stats.load_failures > 0

                async def listed(ids: set[str]) -> bool:
                    got = {r[0] for r in await gateway_selector(stub, admin, hidden=True, disabled=True)}
                    return ids <= got

                def create(model_id: str) -> None:
                    body = {"id": model_id, "name": model_id, "base_model_id": "late-base:1b"}
                    response = http.post("/api/v1/models", json=body)
                    assert response.status_code == 201, response.text

                create("late-first")
                await _wait_for_async(lambda: listed({"late-first", "late-base:1b"}), "the first model listed")

                async def agrees() -> bool:
                    expected = await asyncio.to_thread(
                        registry_selector, http, admin, admin, hidden=True, disabled=True
                    )
                    return await gateway_selector(stub, admin, hidden=True, disabled=True) == expected

                # The consumer deleted on the server, and models changed before the gateway notices.
                resyncs = app.state.selector.stats.resyncs
                async with await nats.connect(late_nats.url) as nc:
                    jsm = nc.jetstream()
                    for info in await jsm._jsm.consumers_info(MODELS.stream):
                        await jsm._jsm.delete_consumer(MODELS.stream, info.name)
                for n in range(3):
                    create(f"late-missed-{n}")
                assert http.delete("/api/v1/models/late-first").status_code == 204
                await _wait_for_async(agrees, "the catalog to resync after its consumer was deleted")
                assert app.state.selector.stats.resyncs > resyncs
                assert app.state.selector.stats.last_resync_reason == "consumer lost"

                # NATS restarts (the registry keeps its events in its outbox meanwhile): reconnected, reloaded.
                resyncs = app.state.selector.stats.resyncs
                await asyncio.to_thread(late_nats.stop)
                create("late-while-nats-down")
                await asyncio.to_thread(late_nats.start)
                await _wait_for_async(agrees, "the catalog to resync after NATS came back")
                await _wait_for_async(
                    lambda: _true(app.state.selector.stats.resyncs > resyncs), "a reload after the reconnect"
                )

                # A gap in the stream sequence (events gone before they were delivered) reloads too.
                listener = app.state.model_events
                create("late-after-restart")
                await _wait_for_async(lambda: listed({"late-after-restart"}), "a model created after the restart")
                last = listener.last_stream_sequence
                assert last is not None
                resyncs = app.state.selector.stats.resyncs
                old = _changed("updated", "late-missed-0", 1, datetime.now(UTC)).SerializeToString()
                await on_gateway(app, listener.handle(old, stream_seq=last + 5))
                await on_gateway(app, app.state.selector.wait_idle())
                assert app.state.selector.stats.resyncs > resyncs
                assert app.state.selector.stats.last_resync_reason == "gap"
                assert await agrees()
        finally:
            await channel.close()


async def _true(value: bool) -> bool:
    return value
