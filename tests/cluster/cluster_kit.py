"""What the cluster fault tests share: service replicas as separate OS processes (so SIGKILL is real), a network
namespace to partition a server into, and the accounting line every test ends with."""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.errors
import nats.js.errors
import psycopg
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from modelhub_common.events import MODELS, decode_envelope
from modelhub_devstack.ports import pick_free_port

READY_SECONDS = 120  # generous: both cores may be busy with the other replicas loading models


@dataclass
class Replica:
    process: subprocess.Popen[bytes]
    url: str
    port: int
    log: Path

    def kill(self) -> None:
        """SIGKILL, no goodbye: no nak, no lease release, no drain."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


@dataclass
class Replicas:
    """Replicas of one service, each ``python -m <module> serve`` (or ``argv``) with its own port.

    ``env`` holds the service's settings (already prefixed); ``port_variable`` names its port setting.
    Every process still running is stopped by :meth:`stop_all` (the fixtures call it even on failure).
    """

    name: str
    env: Mapping[str, str]
    port_variable: str
    logs: Path
    argv: list[str]
    ready_path: str = "/readyz"
    started: list[Replica] = field(default_factory=list)

    @classmethod
    def of(cls, module: str, env: Mapping[str, str], port_variable: str, logs: Path) -> Replicas:
        return cls(module, {**os.environ, **env}, port_variable, logs, [sys.executable, "-m", module, "serve"])

    def start(self, *, port: int | None = None, wait: bool = True, **extra_env: str) -> Replica:
        port = port or pick_free_port()
        log = self.logs / f"{self.name}-{len(self.started)}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                self.argv,
                env={**self.env, self.port_variable: str(port), **extra_env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        replica = Replica(process, f"http://127.0.0.1:{port}", port, log)
        self.started.append(replica)
        if wait:
            self.wait_ready(replica)
        return replica

    def wait_ready(self, replica: Replica) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{replica.url}{self.ready_path}", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert replica.process.poll() is None, replica.log_tail()
            time.sleep(0.1)
        raise AssertionError(f"{replica.url} did not become ready: {replica.log_tail()}")

    def stop_all(self) -> None:
        for replica in self.started:
            if replica.process.poll() is None:
                replica.process.terminate()
        for replica in self.started:
            try:
                replica.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait(timeout=15)


@dataclass
class Accounting:
    """One fault test's ledger: ids the client sent, the ones acknowledged, what the store holds and the
    delivered events (id -> how many times); ``lost`` is acknowledged but not stored or not delivered."""

    name: str
    operations: int
    acknowledged: set[str]
    stored: set[str]
    delivered: Mapping[str, int]

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.delivered.values() if n > 1)

    @property
    def lost(self) -> int:
        return len(self.acknowledged - self.stored) + len(self.acknowledged - set(self.delivered))

    def report(self, *, min_acknowledged: int | None = None) -> None:
        """Prints the accounting line and asserts zero lost and zero duplicated effects."""
        print(  # noqa: T201 - the accounting line
            f"{self.name}: operations {self.operations}, acknowledged {len(self.acknowledged)}, "
            f"stored {len(self.stored)}, events delivered {len(self.delivered)}, "
            f"duplicates {self.duplicates}, lost {self.lost}"
        )
        assert self.acknowledged <= self.stored, sorted(self.acknowledged - self.stored)[:5]
        assert self.stored == set(self.delivered), (
            sorted(self.stored - set(self.delivered))[:5],
            sorted(set(self.delivered) - self.stored)[:5],
        )
        assert self.duplicates == 0, {k: n for k, n in self.delivered.items() if n > 1}
        want = self.operations if min_acknowledged is None else min_acknowledged
        assert len(self.acknowledged) >= want, f"only {len(self.acknowledged)} of {self.operations} acknowledged"


def settings_environment(settings: BaseSettings, prefix: str) -> dict[str, str]:
    """A service's settings object as the environment its ``serve`` process reads (lists and maps as JSON)."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, list | tuple | dict):
            text = json.dumps(value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        env[prefix + name.upper()] = text
    return env


async def delivered_events(
    urls: list[str], stream: str, subject: str, key: Callable[[Any], str | None], want: int, wait: float
) -> dict[str, int]:
    """Reads ``subject`` on ``stream`` from its start with an ephemeral consumer: key -> how many messages,
    once ``want`` keys are seen (or after ``wait`` s), and a few seconds more so a late duplicate counts too.
    ``key`` maps a decoded envelope to the id it is about (None: not this test's)."""
    nc = await nats.connect(urls)
    try:
        sub = None
        deadline = time.monotonic() + 60
        while sub is None:
            try:  # right after a node is killed the stream may still be electing its new leader
                sub = await nc.jetstream().pull_subscribe(
                    subject, durable=None, stream=stream, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
                )
            except (nats.errors.Error, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        seen: dict[str, set[int]] = {}

        async def read_until(deadline: float, enough: Callable[[], bool]) -> None:
            while time.monotonic() < deadline and not enough():
                try:
                    for msg in await sub.fetch(200, timeout=1):
                        name = key(decode_envelope(msg.data))
                        if name is not None:
                            seen.setdefault(name, set()).add(msg.metadata.sequence.stream)
                        await msg.ack()
                except TimeoutError:
                    continue
                except nats.js.errors.ServiceUnavailableError:
                    # JetStream answers 503 while the cluster moves a stream or consumer leader: read again.
                    await asyncio.sleep(0.2)

        await read_until(time.monotonic() + wait, lambda: len(seen) >= want)
        await read_until(time.monotonic() + 3, lambda: False)
        return {name: len(sequences) for name, sequences in seen.items()}
    finally:
        await nc.close()


def registry_replicas(settings: BaseSettings, logs: Path) -> Replicas:
    """Replicas of the registry with ``settings`` (one worker process each), its database migrated."""
    from modelhub_registry import bootstrap
    from modelhub_registry.settings import ENV_PREFIX, RegistrySettings

    assert isinstance(settings, RegistrySettings)
    asyncio.run(bootstrap.run_migrations(settings))
    env = settings_environment(settings.model_copy(update={"workers": 1}), ENV_PREFIX)
    return Replicas.of("modelhub_registry", env, ENV_PREFIX + "PORT", logs)


async def models_stream_state(urls: list[str]) -> tuple[str, int, int]:
    """(leader's name, last sequence, number of replicas) of the models stream, read through ``urls``; waits
    out an election (right after a node is lost the stream may have no leader for a few seconds)."""
    nc = await nats.connect(urls)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                info = await nc.jetstream().stream_info(MODELS.stream)
                if info.cluster is not None and info.cluster.leader:
                    replicas = 1 + len(info.cluster.replicas or [])
                    return str(info.cluster.leader), int(info.state.last_seq or 0), replicas
            except (nats.errors.Error, TimeoutError):
                pass
            assert time.monotonic() < deadline, "the models stream has no leader"
            await asyncio.sleep(0.5)
    finally:
        await nc.close()


def created_models(
    database_url: str, nats_urls: list[str], prefix: str, *, want: int | None = None, wait: float = 60
) -> tuple[set[str], dict[str, int]]:
    """The registry's model files whose id starts with ``prefix``: (ids stored in its database, id -> how
    many ``created`` events the stream holds), waiting for ``want`` ids' events (default: every stored one)."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT id FROM models WHERE id LIKE %s", (f"{prefix}-%",)).fetchall()
    stored = {str(row[0]) for row in rows}

    def model_of(envelope: Any) -> str | None:
        model_id = str(envelope.model_changed.model_id)
        return model_id if model_id.startswith(prefix) else None

    subject = MODELS.subject("created")
    wanted = len(stored) if want is None else want
    return stored, asyncio.run(delivered_events(nats_urls, MODELS.stream, subject, model_of, wanted, wait))


@dataclass(frozen=True)
class NamespaceLink:
    """A network namespace joined to this host by one veth pair on a private /30: the only path between a
    server run inside it (under :attr:`launcher`) and the host. :meth:`cut` unplugs it, :meth:`restore`
    plugs it back."""

    namespace: str
    host_end: str
    namespace_end: str
    host_address: str
    namespace_address: str

    @property
    def launcher(self) -> list[str]:
        return ["ip", "netns", "exec", self.namespace]

    def cut(self) -> None:
        """Takes the namespace's end down: the host's end loses its carrier, packets both ways are dropped and
        established connections stall, as in a partition. (Not the host's end: downing it removes the host's
        route to the /30, and traffic for the namespace would then follow the default route off the machine.)"""
        _run(*self.launcher, "ip", "link", "set", self.namespace_end, "down")

    def restore(self) -> None:
        _run(*self.launcher, "ip", "link", "set", self.namespace_end, "up")


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _unused_link_subnet() -> int:
    """A third octet X for 10.213.X.0/30 that no address or route of this host uses yet."""
    taken = _run("ip", "-4", "-o", "addr", "show") + _run("ip", "-4", "route", "show", "table", "all")
    for _ in range(50):
        octet = random.randint(1, 254)
        if f"10.213.{octet}." not in taken:
            return octet
    raise AssertionError("no free 10.213.X.0/30 for the test's veth link")


@contextmanager
def namespace_link() -> Iterator[NamespaceLink]:
    """A fresh :class:`NamespaceLink` (needs root and ``ip netns``); the namespace and the veth pair are
    deleted on the way out, even on failure. Whatever was started inside must be stopped before."""
    if shutil.which("ip") is None:
        pytest.fail("a true network partition needs iproute2's `ip` (network namespaces and veth pairs)")
    tag = secrets.token_hex(3)
    octet = _unused_link_subnet()
    link = NamespaceLink(f"mh-part-{tag}", f"mhp{tag}h", f"mhp{tag}n", f"10.213.{octet}.1", f"10.213.{octet}.2")
    made = subprocess.run(["ip", "netns", "add", link.namespace], capture_output=True, text=True, timeout=30)
    if made.returncode != 0:
        pytest.fail(f"cannot make a network namespace (root and `ip netns` are needed): {made.stderr.strip()}")
    try:
        _run("ip", "link", "add", link.host_end, "type", "veth", "peer", "name", link.namespace_end)
        _run("ip", "link", "set", link.namespace_end, "netns", link.namespace)
        _run("ip", "addr", "add", f"{link.host_address}/30", "dev", link.host_end)
        _run("ip", "link", "set", link.host_end, "up")
        _run(*link.launcher, "ip", "addr", "add", f"{link.namespace_address}/30", "dev", link.namespace_end)
        _run(*link.launcher, "ip", "link", "set", link.namespace_end, "up")
        _run(*link.launcher, "ip", "link", "set", "lo", "up")
        yield link
    finally:
        # Deleting the namespace destroys its end of the pair, and with it the host's end.
        subprocess.run(["ip", "netns", "delete", link.namespace], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "delete", link.host_end], capture_output=True, timeout=30)
