"""``python -m modelhub_puller import-gguf``: a local GGUF stored as a pull would store it, announced once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from puller_testkit import db_rows, environment, make_gguf, stored_object, unique_outbox_ids, wait_for

from modelhub_puller import bootstrap
from modelhub_puller.domain.manifest import parse_manifest
from modelhub_puller.settings import PullerSettings


def test_import_stores_blob_and_manifest_and_registers_the_base_model_once(
    puller_settings: Callable[..., PullerSettings],
    registry_service: Callable[[str], dict[str, Any] | None],
    tmp_path: Path,
) -> None:
    settings = puller_settings()
    asyncio.run(bootstrap.run_migrations(settings))
    unique_outbox_ids(settings.database_url.get_secret_value())
    path = tmp_path / "gemma.gguf"
    data = make_gguf(path, megabytes=7, seed=101, arch="gemma3")

    result = asyncio.run(
        bootstrap.import_gguf(settings, name="gemma3:270m", path=path, params={"temperature": 0.0, "seed": 42})
    )
    assert result.created and result.base_model_id == "gemma3:270m"

    manifest_raw = stored_object(settings, "manifests/registry.ollama.ai/library/gemma3/270m")
    assert manifest_raw is not None
    manifest = parse_manifest(manifest_raw)
    assert manifest.digest == result.manifest_digest
    model_layer = manifest.layers[0]
    assert model_layer.media_type == "application/vnd.ollama.image.model"
    assert model_layer.digest == result.model_digest
    assert stored_object(settings, "blobs/sha256/" + model_layer.digest.removeprefix("sha256:")) == data

    base = wait_for(lambda: registry_service("gemma3:270m"), what="the registry to register gemma3:270m")
    assert base["source"] == "local"
    assert base["details"]["model_digest"] == result.model_digest
    assert base["details"]["store_bucket"] == settings.bucket
    assert base["details"]["family"] == "gemma3" and base["details"]["quantization_level"] == "Q4_K_M"
    assert base["params"]["temperature"] == 0.0

    # The command line, a second time: nothing new is stored or announced.
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelhub_puller",
            "import-gguf",
            "--name",
            "gemma3:270m",
            "--file",
            str(path),
            "--params",
            '{"seed": 42, "temperature": 0.0}',
        ],
        env=environment(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert "already stored" in again.stderr
    assert db_rows(settings, "SELECT count(*) FROM pull_jobs")[0][0] == 1
    assert db_rows(settings, "SELECT count(*) FROM outbox")[0][0] == 1


def test_import_refuses_files_that_are_not_gguf(puller_settings: Callable[..., PullerSettings], tmp_path: Path) -> None:
    settings = puller_settings()
    asyncio.run(bootstrap.run_migrations(settings))
    path = tmp_path / "notes.txt"
    path.write_text("not a model")
    result = subprocess.run(
        [sys.executable, "-m", "modelhub_puller", "import-gguf", "--name", "x:1", "--file", str(path)],
        env=environment(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "is not a GGUF file" in result.stderr
