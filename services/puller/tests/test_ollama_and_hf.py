"""Target ``ollama`` and hf.co specifics, against small in-process servers.

Neither an Ollama server nor hf.co can run here, so these tests use test doubles that speak the documented
protocols (PROTOCOLS.md §3–4): a fake Ollama that streams ``/api/pull`` NDJSON lines and answers
``/api/show``, and the registry double in front of docker-registry answering hf.co-style refusals.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from puller_testkit import Puller, PushedModel, ThreadedServer
from registry_double import RegistryDouble
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

LAYERS = {"sha256:" + "a" * 64: 4_000, "sha256:" + "b" * 64: 300}


class FakeOllama:
    """Streams a pull line by line; with ``hold`` it stops before 'success' until the client goes away."""

    def __init__(self, *, hold: bool = False, error: str | None = None) -> None:
        self.hold = hold
        self.error = error
        self.requests: list[dict[str, Any]] = []
        self.disconnected = threading.Event()

    def app(self) -> Starlette:
        async def pull(request: Request) -> Response:
            body = await request.json()
            self.requests.append(body)

            async def lines() -> AsyncIterator[bytes]:
                try:
                    yield b'{"status":"pulling manifest"}\n'
                    for digest, total in LAYERS.items():
                        for done in (0, total // 2, total):
                            item = {"status": f"pulling {digest[7:19]}", "digest": digest, "total": total}
                            if done:
                                item["completed"] = done
                            yield (json.dumps(item) + "\n").encode()
                            await asyncio.sleep(0.05)
                    if self.error:
                        yield (json.dumps({"error": self.error}) + "\n").encode()
                        return
                    if self.hold:
                        while True:
                            yield b'{"status":"verifying sha256 digest"}\n'
                            await asyncio.sleep(0.1)
                    for status in ("verifying sha256 digest", "writing manifest", "success"):
                        yield (json.dumps({"status": status}) + "\n").encode()
                finally:
                    self.disconnected.set()

            return StreamingResponse(lines(), media_type="application/x-ndjson")

        async def show(request: Request) -> Response:
            return JSONResponse(
                {
                    "template": "{{ .Prompt }}",
                    "system": "Be brief.",
                    "parameters": 'temperature 0.4\nstop "<|a|>"\nstop "<|b|>"\nnum_ctx 4096',
                    "details": {
                        "format": "gguf",
                        "family": "llama",
                        "parameter_size": "1B",
                        "quantization_level": "Q4_K_M",
                    },
                    "model_info": {"general.architecture": "llama"},
                    "capabilities": ["completion"],
                }
            )

        return Starlette(
            routes=[Route("/api/pull", pull, methods=["POST"]), Route("/api/show", show, methods=["POST"])]
        )


def test_ollama_target_relays_progress_with_overall_totals(make_puller: Callable[..., Puller]) -> None:
    fake = FakeOllama()
    with ThreadedServer(fake.app()) as server:
        puller = make_puller(ollama_url=server.url)
        started = puller.start("llama3.2:1b", target="ollama")
        events = puller.events(started["id"])
        pull = puller.wait(started["id"])
    assert pull["state"] == "completed", pull
    assert fake.requests[0]["model"] == "llama3.2:1b" and fake.requests[0]["stream"] is True
    assert pull["total_bytes"] == sum(LAYERS.values()) == pull["completed_bytes"]
    assert {layer["digest"] for layer in pull["layers"]} == set(LAYERS)
    assert events[-1]["type"] == "completed"
    progress = [e for e in events if e["type"] == "progress"]
    assert progress and all(e["total_bytes"] <= sum(LAYERS.values()) for e in progress)


def test_ollama_error_line_fails_the_pull(make_puller: Callable[..., Puller]) -> None:
    with ThreadedServer(FakeOllama(error="pull model manifest: file does not exist").app()) as server:
        puller = make_puller(ollama_url=server.url)
        pull = puller.wait(puller.start("nosuchmodel", target="ollama")["id"])
    assert pull["state"] == "failed"
    assert "file does not exist" in pull["error"]["message"]


def test_cancelling_an_ollama_pull_closes_the_upstream_stream(make_puller: Callable[..., Puller]) -> None:
    fake = FakeOllama(hold=True)
    with ThreadedServer(fake.app()) as server:
        puller = make_puller(ollama_url=server.url)
        started = puller.start("llama3.2:3b", target="ollama")
        puller.wait(started["id"], until=lambda p: p["status"] == "verifying sha256 digest")
        assert puller.client.delete(f"/api/v1/pulls/{started['id']}", headers=puller.admin).status_code == 200
        assert puller.wait(started["id"])["state"] == "cancelled"
        assert fake.disconnected.wait(10)


def test_ollama_target_needs_a_configured_server(puller: Puller) -> None:
    response = puller.pull("llama3.2", target="ollama")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "ollama_not_configured"


@pytest.mark.parametrize("typed", ["hf.co/Acme/Tiny-GGUF:Q4_K_M", "huggingface.co/Acme/Tiny-GGUF:Q4_K_M"])
def test_hf_co_name_is_pulled_from_its_registry_and_keeps_its_id(
    make_puller: Callable[..., Puller],
    double: RegistryDouble,
    push_model: Callable[..., PushedModel],
    typed: str,
) -> None:
    # docker-registry only stores lower-case repositories; hf.co repos have capitals. The double maps them.
    push_model(megabytes=0.5, seed=81, repository="acme/tiny-gguf", tag="Q4_K_M")
    double.reset(lowercase_repository=True)
    puller = make_puller(registry_mirrors={"hf.co": f"http://{double.host}"})
    started = puller.start(typed)
    assert started["base_model_id"] == "hf.co/Acme/Tiny-GGUF:Q4_K_M"
    assert puller.wait(started["id"])["state"] == "completed"


def test_hf_co_refusal_text_reaches_the_user(make_puller: Callable[..., Puller], double: RegistryDouble) -> None:
    double.reset(refuse_tags={"Q9_Z": "not a valid quantization scheme"})
    puller = make_puller(registry_mirrors={"hf.co": f"http://{double.host}"})
    pull = puller.wait(puller.start("hf.co/acme/tiny-gguf:Q9_Z")["id"])
    assert pull["state"] == "failed"
    assert pull["error"]["code"] == "upstream_rejected"
    assert "not a valid quantization scheme" in pull["error"]["message"]
