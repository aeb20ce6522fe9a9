"""Helpers the puller tests share: models pushed Ollama-style to the real registry, a puller client, waits."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import httpx
import numpy as np
import psycopg
from fastapi.testclient import TestClient
from minio import Minio
from pydantic import SecretStr

from modelhub_puller import bootstrap
from modelhub_puller.settings import ENV_PREFIX, PullerSettings

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG = "application/vnd.docker.container.image.v1+json"
OLLAMA = "application/vnd.ollama.image."
MIB = 1024 * 1024
FINAL = ("completed", "failed", "cancelled")


def make_gguf(path: Path, *, megabytes: float, seed: int, arch: str = "llama", vision: bool = False) -> bytes:
    """A real GGUF file: metadata a model loader reads, and one tensor of random weights."""
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"test-{arch}-{seed}")
    writer.add_file_type(15)  # Q4_K_M
    writer.add_uint64("general.parameter_count", 268_098_176)
    writer.add_context_length(2048)
    writer.add_block_count(1)
    writer.add_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}")
    if vision:
        writer.add_uint32(f"{arch}.vision.block_count", 2)
    elements = int(megabytes * MIB / 4)
    rng = np.random.default_rng(seed)
    writer.add_tensor("token_embd.weight", rng.random(elements, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class OciPusher:
    """Fills the real registry through its push API (monolithic blob uploads, then the manifest)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.host = self.url.removeprefix("http://")
        self.http = httpx.Client(timeout=60)

    def push_blob(self, repository: str, data: bytes) -> str:
        digest = digest_of(data)
        head = self.http.head(f"{self.url}/v2/{repository}/blobs/{digest}")
        if head.status_code == 200:
            return digest
        start = self.http.post(f"{self.url}/v2/{repository}/blobs/uploads/")
        assert start.status_code == 202, start.text
        location = start.headers["location"]
        if location.startswith("/"):
            location = self.url + location
        # httpx params= would drop the _state query the registry put in the Location: append the digest by hand.
        separator = "&" if "?" in location else "?"
        done = self.http.put(
            f"{location}{separator}digest={digest}",
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert done.status_code == 201, done.text
        return digest

    def push_manifest(
        self, repository: str, tag: str, config: dict[str, Any], layers: list[tuple[str, bytes]]
    ) -> bytes:
        config_bytes = json.dumps(config).encode()
        body = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_V2,
            "config": {
                "mediaType": CONFIG,
                "digest": self.push_blob(repository, config_bytes),
                "size": len(config_bytes),
            },
            "layers": [
                {"mediaType": media_type, "digest": self.push_blob(repository, data), "size": len(data)}
                for media_type, data in layers
            ],
        }
        raw = json.dumps(body, indent=3).encode()
        response = self.http.put(
            f"{self.url}/v2/{repository}/manifests/{tag}", content=raw, headers={"Content-Type": MANIFEST_V2}
        )
        assert response.status_code == 201, response.text
        return raw


@dataclass
class PushedModel:
    repository: str
    tag: str
    manifest: bytes
    layers: dict[str, bytes] = field(default_factory=dict)  # media type suffix -> bytes

    def digest(self, kind: str) -> str:
        return digest_of(self.layers[kind])

    def name(self, host: str) -> str:
        return f"{host}/{self.repository}:{self.tag}"


@dataclass
class Puller:
    client: TestClient
    settings: PullerSettings
    token: Callable[..., str]

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token('root', 'admin')}"}

    def pull(self, model: str, target: str = "store", headers: dict[str, str] | None = None) -> httpx.Response:
        return self.client.post("/api/v1/pulls", json={"model": model, "target": target}, headers=headers or self.admin)

    def start(self, model: str, target: str = "store") -> dict[str, Any]:
        response = self.pull(model, target)
        assert response.status_code == 202, response.text
        body: dict[str, Any] = response.json()
        return body

    def get(self, pull_id: str) -> dict[str, Any]:
        response = self.client.get(f"/api/v1/pulls/{pull_id}", headers=self.admin)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait(
        self, pull_id: str, *, until: Callable[[dict[str, Any]], bool] | None = None, timeout: float = 90
    ) -> dict[str, Any]:
        done = until or (lambda p: p["state"] in FINAL)
        deadline = time.monotonic() + timeout
        while True:
            pull = self.get(pull_id)
            if done(pull):
                return pull
            if time.monotonic() > deadline:
                raise AssertionError(f"pull did not reach the expected state in {timeout} s: {pull}")
            time.sleep(0.1)

    def events(self, pull_id: str) -> list[dict[str, Any]]:
        with self.client.stream("GET", f"/api/v1/pulls/{pull_id}/events", headers=self.admin) as response:
            assert response.status_code == 200
            return [json.loads(line) for line in response.iter_lines() if line.strip()]


def wait_for(predicate: Callable[[], Any], *, timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def db_rows(settings: PullerSettings, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.database_url.get_secret_value()) as conn:
        return conn.execute(query, params).fetchall()


def unique_outbox_ids(url: str) -> None:
    """Starts this database's outbox ids at a random point.

    The relay publishes row N as ``Nats-Msg-Id: puller-N``; every test has a fresh database, so without this
    the second test's first event would repeat the first test's id and JetStream would drop it as a
    duplicate (the stream is shared by the whole session).
    """
    with psycopg.connect(url, autocommit=True) as conn:
        start = random.randrange(10**9, 10**12)
        conn.execute(f"ALTER SEQUENCE outbox_id_seq RESTART WITH {start}")


class ThreadedServer:
    """An ASGI app on a free loopback port, run by uvicorn in a background thread."""

    def __init__(self, app: Any) -> None:
        import threading

        import uvicorn

        from modelhub_devstack.ports import pick_free_port

        self.port = pick_free_port()
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, lifespan="off")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            assert time.monotonic() < deadline, "test server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def environment(settings: PullerSettings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, list | dict):
            text = json.dumps(value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        env[ENV_PREFIX + name.upper()] = text
    return env


def store_client(settings: PullerSettings) -> Minio:
    return Minio(
        settings.s3_endpoint,
        access_key=settings.s3_access_key.get_secret_value(),
        secret_key=settings.s3_secret_key.get_secret_value(),
        secure=settings.s3_secure,
    )


def stored_object(settings: PullerSettings, key: str) -> bytes | None:
    try:
        response = store_client(settings).get_object(settings.bucket, key)
    except Exception:
        return None
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


@contextmanager
def puller_process(settings: PullerSettings, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "modelhub_puller", "serve"],
            env=environment(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{settings.port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the puller process did not get ready"
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class ModelPull:
    """One model's weights blob pulled by puller processes on a migrated database of its own."""

    def __init__(self, settings: PullerSettings, model: PushedModel, token: str) -> None:
        self.settings = settings
        self.model = model
        self.digest = model.digest("model")
        self.size = len(model.layers["model"])
        self.token = token
        asyncio.run(bootstrap.run_migrations(settings))
        unique_outbox_ids(settings.database_url.get_secret_value())

    def client(self, port: int) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {self.token}"}, timeout=10
        )
