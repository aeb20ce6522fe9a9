"""Pulls into the S3 store from Debian's docker-registry (a real OCI registry) filled with Ollama-style models."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from puller_testkit import OciPusher, Puller, PushedModel, db_rows, stored_object, wait_for
from registry_double import RegistryDouble

from modelhub_puller.settings import PullerSettings


def blob_key(digest: str) -> str:
    return "blobs/sha256/" + digest.removeprefix("sha256:")


def test_full_pull_stores_blobs_and_manifest_and_registers_the_base_model(
    puller: Puller,
    oci: OciPusher,
    push_model: Callable[..., PushedModel],
    registry_service: Callable[[str], dict[str, Any] | None],
) -> None:
    model = push_model(megabytes=12, seed=11, projector=b"projector-bytes" * 1000)
    name = model.name(oci.host)
    started = puller.start(name)
    assert started["created"] is True and started["state"] == "queued"
    assert started["base_model_id"] == name  # a non-Ollama host keeps host and namespace

    events = puller.events(started["id"])
    assert events[0]["type"] == "snapshot"
    assert events[-1]["type"] == "completed"
    assert any(e["type"] == "progress" for e in events) or events[0]["pull"]["state"] == "completed"

    pull = puller.get(started["id"])
    assert pull["state"] == "completed" and pull["error"] is None
    assert pull["total_bytes"] == pull["completed_bytes"] > 12 * 1024 * 1024
    assert {layer["state"] for layer in pull["layers"]} == {"downloaded"}
    assert {layer["media_type"].rsplit(".", 1)[-1] for layer in pull["layers"]} >= {
        "model",
        "projector",
        "template",
        "system",
        "params",
        "license",
    }

    settings = puller.settings
    for kind, data in model.layers.items():
        assert stored_object(settings, blob_key(model.digest(kind))) == data, kind
    manifest_key = f"manifests/{oci.host}/{model.repository}/{model.tag}"
    assert stored_object(settings, manifest_key) == model.manifest  # byte-identical, written last

    base = wait_for(lambda: registry_service(name), what="the registry to register the pulled model")
    assert base["source"] == "local"
    details = base["details"]
    assert details["template"] == "{{ .System }} {{ .Prompt }}"
    assert details["model_digest"] == model.digest("model")
    assert details["projector_digests"] == [model.digest("projector")]
    assert details["store_bucket"] == settings.bucket
    assert details["family"] == "llama" and details["quantization_level"] == "Q4_K_M"
    assert details["architecture"] == "llama"
    assert details["licenses"] == ["Test License 1.0"]
    assert details["digest"] == "sha256:" + hashlib.sha256(model.manifest).hexdigest()
    assert base["capabilities"]["vision"] is True
    assert base["params"]["system"] == "You are a test model."
    assert base["params"]["temperature"] == 0.6 and base["params"]["stop"] == ["<end>"]

    stored = puller.client.get("/api/v1/store/models", headers=puller.admin).json()["items"]
    assert [m["model"] for m in stored] == [name]


def test_second_model_sharing_layers_downloads_only_the_new_ones(
    puller: Puller, oci: OciPusher, push_model: Callable[..., PushedModel]
) -> None:
    first = push_model(megabytes=8, seed=21)
    second = push_model(megabytes=8, seed=21, template="{{ .Prompt }} (second)")
    assert first.digest("model") == second.digest("model")

    done = puller.wait(puller.start(first.name(oci.host))["id"])
    assert done["state"] == "completed"
    again = puller.wait(puller.start(second.name(oci.host))["id"])
    assert again["state"] == "completed"
    states = {layer["digest"]: layer["state"] for layer in again["layers"]}
    assert states[second.digest("model")] == "present"
    assert states[second.digest("system")] == "present"
    assert states[second.digest("template")] == "downloaded"

    # Deleting the first model keeps the blobs the second still uses.
    response = puller.client.delete(f"/api/v1/store/models/{first.name(oci.host)}", headers=puller.admin)
    assert response.status_code == 200, response.text
    removed = set(response.json()["removed_blobs"])
    assert removed == {first.digest("template")} | {
        d for d in removed if d not in {second.digest(k) for k in second.layers}
    }
    assert second.digest("model") not in removed
    assert stored_object(puller.settings, blob_key(second.digest("model"))) is not None
    assert stored_object(puller.settings, blob_key(first.digest("template"))) is None
    assert stored_object(puller.settings, f"manifests/{oci.host}/{first.repository}/{first.tag}") is None


def test_bearer_token_and_same_host_redirect_then_ranged_parts(
    puller: Puller, double: RegistryDouble, push_model: Callable[..., PushedModel]
) -> None:
    double.reset(require_token=True, redirect="same-host")
    model = push_model(megabytes=12, seed=31)
    pull = puller.wait(puller.start(model.name(double.host))["id"])
    assert pull["state"] == "completed", pull
    assert double.token_requests >= 1
    parts = double.blob_requests(model.digest("model"))
    ranged = [r for r in parts if r.range and r.range != "bytes=0-0"]
    assert len(ranged) == 3  # 12 MiB and a bit in 5 MiB parts, each fetched once
    assert all(r.path.startswith("/cdn/") and r.authorized for r in ranged)  # same host keeps the token
    assert stored_object(puller.settings, blob_key(model.digest("model"))) == model.layers["model"]


def test_redirect_to_another_host_drops_the_token(
    puller: Puller, double: RegistryDouble, push_model: Callable[..., PushedModel]
) -> None:
    double.reset(require_token=True, redirect="cross-host")
    model = push_model(megabytes=7, seed=32)
    pull = puller.wait(puller.start(model.name(double.host))["id"])
    assert pull["state"] == "completed", pull
    cdn = [r for r in double.blob_requests(model.digest("model")) if r.path.startswith("/cdn/")]
    assert cdn and not any(r.authorized for r in cdn)


def test_registry_answering_200_without_ranges_works(
    puller: Puller, double: RegistryDouble, push_model: Callable[..., PushedModel]
) -> None:
    double.reset(ignore_range=True)
    model = push_model(megabytes=11, seed=33)
    pull = puller.wait(puller.start(model.name(double.host))["id"])
    assert pull["state"] == "completed", pull
    assert stored_object(puller.settings, blob_key(model.digest("model"))) == model.layers["model"]


def test_corrupted_blob_fails_with_digest_mismatch_and_registers_nothing(
    puller: Puller,
    double: RegistryDouble,
    push_model: Callable[..., PushedModel],
    registry_service: Callable[[str], dict[str, Any] | None],
) -> None:
    model = push_model(megabytes=9, seed=41)
    double.reset(corrupt={model.digest("model")})
    name = model.name(double.host)
    pull = puller.wait(puller.start(name)["id"])
    assert pull["state"] == "failed"
    assert pull["error"]["code"] == "digest_mismatch"
    assert "digest mismatch" in pull["error"]["message"]
    assert stored_object(puller.settings, blob_key(model.digest("model"))) is None
    assert stored_object(puller.settings, f"manifests/{double.host}/{model.repository}/{model.tag}") is None
    assert db_rows(puller.settings, "SELECT count(*) FROM blob_uploads")[0][0] == 0
    assert db_rows(puller.settings, "SELECT count(*) FROM manifests")[0][0] == 0
    # The registry saw a failed event, never a completed one: wait until it has caught up with a later pull.
    double.reset()
    other = push_model(megabytes=0.5, seed=42)
    assert puller.wait(puller.start(other.name(double.host))["id"])["state"] == "completed"
    wait_for(lambda: registry_service(other.name(double.host)), what="the later pull to be registered")
    assert registry_service(name) is None


def test_two_concurrent_requests_share_one_download(
    puller: Puller, double: RegistryDouble, push_model: Callable[..., PushedModel]
) -> None:
    model = push_model(megabytes=10, seed=51)
    double.reset(bytes_per_second=8 * 1024 * 1024)
    name = model.name(double.host)
    first = puller.start(name)
    second = puller.pull("ollama pull " + name).json()
    assert second["id"] == first["id"] and second["created"] is False
    listed = puller.client.get("/api/v1/pulls?active=true", headers=puller.admin).json()["items"]
    assert [p["id"] for p in listed].count(first["id"]) == 1
    assert puller.wait(first["id"])["state"] == "completed"
    ranged = [r.range for r in double.blob_requests(model.digest("model")) if r.range != "bytes=0-0"]
    assert len(ranged) == len(set(ranged)) == 3


def test_two_models_needing_the_same_blob_at_once_download_it_once(
    make_puller: Callable[..., Puller],
    puller_settings: Callable[..., PullerSettings],
    double: RegistryDouble,
    push_model: Callable[..., PushedModel],
) -> None:
    settings = puller_settings()
    a, b = make_puller(settings), make_puller(settings)  # two replicas on one database
    first = push_model(megabytes=10, seed=52)
    second = push_model(megabytes=10, seed=52, system="another system prompt")
    double.reset(bytes_per_second=6 * 1024 * 1024)
    one = a.start(first.name(double.host))
    two = b.start(second.name(double.host))
    assert a.wait(one["id"])["state"] == "completed"
    assert b.wait(two["id"])["state"] == "completed"
    ranged = [r.range for r in double.blob_requests(first.digest("model")) if r.range != "bytes=0-0"]
    assert len(ranged) == len(set(ranged)) == 3


def test_cancel_stops_the_pull_and_leaves_nothing_behind(
    puller: Puller, double: RegistryDouble, push_model: Callable[..., PushedModel]
) -> None:
    model = push_model(megabytes=16, seed=61)
    double.reset(bytes_per_second=1024 * 1024)
    started = puller.start(model.name(double.host))
    puller.wait(started["id"], until=lambda p: p["completed_bytes"] > 1024 * 1024)
    response = puller.client.delete(f"/api/v1/pulls/{started['id']}", headers=puller.admin)
    assert response.status_code == 200
    pull = puller.wait(started["id"])
    assert pull["state"] == "cancelled"
    assert puller.events(started["id"])[-1]["pull"]["state"] == "cancelled"
    wait_for(lambda: db_rows(puller.settings, "SELECT count(*) FROM blob_uploads")[0][0] == 0, what="upload aborted")
    assert stored_object(puller.settings, blob_key(model.digest("model"))) is None
    # Cancelling again is harmless and says how it ended.
    again = puller.client.delete(f"/api/v1/pulls/{started['id']}", headers=puller.admin)
    assert again.status_code == 200 and again.json()["state"] == "cancelled"


def test_any_replica_streams_and_cancels_a_pull_another_replica_runs(
    make_puller: Callable[..., Puller],
    puller_settings: Callable[..., PullerSettings],
    double: RegistryDouble,
    push_model: Callable[..., PushedModel],
) -> None:
    settings = puller_settings()
    runner = make_puller(settings)
    model = push_model(megabytes=16, seed=62)
    double.reset(bytes_per_second=1024 * 1024)
    started = runner.start(model.name(double.host))
    runner.wait(started["id"], until=lambda p: p["state"] == "running")
    # The job's state is stored before the worker lists it as running: wait for both.
    deadline = time.monotonic() + 10
    while started["id"] not in runner.client.app.state.worker.running and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.05)
    assert started["id"] in runner.client.app.state.worker.running  # type: ignore[attr-defined]
    other = make_puller(settings)  # started after the claim: it only serves the API for this pull

    with other.client.stream("GET", f"/api/v1/pulls/{started['id']}/events", headers=other.admin) as response:
        lines = response.iter_lines()
        first = json.loads(next(lines))
        assert first["type"] == "snapshot"
        progress = next(json.loads(line) for line in lines if line.strip() and json.loads(line)["type"] == "progress")
        assert progress["pull_id"] == started["id"]
        assert other.client.delete(f"/api/v1/pulls/{started['id']}", headers=other.admin).status_code == 200
        last = [json.loads(line) for line in lines if line.strip()][-1]
    assert last["type"] == "cancelled"
    assert runner.wait(started["id"])["state"] == "cancelled"
