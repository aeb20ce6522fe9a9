"""The GGUF header reader and the details a completed pull carries, on files written by the ``gguf`` package."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from puller_testkit import make_gguf

from modelhub_puller.domain import manifest as mf
from modelhub_puller.domain.details import describe
from modelhub_puller.domain.gguf import GgufError, read_gguf_info
from modelhub_puller.errors import InvalidManifestError


def test_reads_the_metadata_a_real_gguf_file_carries(tmp_path: Path) -> None:
    data = make_gguf(tmp_path / "m.gguf", megabytes=0.5, seed=3)
    info = read_gguf_info(io.BytesIO(data).read)
    assert info.architecture == "llama"
    assert info.quantization == "Q4_K_M"
    assert info.parameter_size == "268.10M"
    assert info.chat_template.startswith("{% for m in messages %}")
    assert info.tensor_count == 1


def test_a_file_that_is_not_gguf_is_refused() -> None:
    with pytest.raises(GgufError, match="bad magic"):
        read_gguf_info(io.BytesIO(b"PK\x03\x04 not a model").read)
    with pytest.raises(GgufError, match="truncated"):
        read_gguf_info(io.BytesIO(b"GGUF\x03\x00\x00\x00").read)


def test_details_combine_config_layers_and_header(tmp_path: Path) -> None:
    gguf_bytes = make_gguf(tmp_path / "v.gguf", megabytes=0.2, seed=4, vision=True)
    model = mf.Layer(mf.MODEL, mf.sha256_digest(gguf_bytes), len(gguf_bytes))
    projector = mf.Layer(mf.PROJECTOR, mf.sha256_digest(b"proj"), 4)
    config = mf.Layer(mf.CONFIG_MEDIA_TYPE, mf.sha256_digest(b"{}"), 2)
    manifest = mf.parse_manifest(mf.build_manifest(config, [model, projector]))
    details = describe(
        manifest,
        config={"model_format": "gguf", "model_family": "llama", "model_type": "8B", "file_type": "Q4_0"},
        texts={mf.TEMPLATE: ["{{ .Prompt }}"], mf.PARAMS: [json.dumps({"temperature": 0.2})], mf.LICENSE: ["A", "B"]},
        gguf=read_gguf_info(io.BytesIO(gguf_bytes).read),
        bucket="models",
    )
    assert (details.family, details.parameter_size, details.quantization_level) == ("llama", "8B", "Q4_0")
    assert details.architecture == "llama"
    assert details.template == "{{ .Prompt }}" and details.params == {"temperature": 0.2}
    assert details.licenses == ["A", "B"]
    assert details.vision is True
    assert details.model_digest == model.digest and details.projector_digests == [projector.digest]
    assert details.size_bytes == model.size + projector.size + config.size


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"schemaVersion": 1}, "schemaVersion"),
        ({"schemaVersion": 2, "config": {"mediaType": "x", "digest": "sha256:" + "a" * 64, "size": 1}}, "no layers"),
        (
            {
                "schemaVersion": 2,
                "config": {"mediaType": "x", "digest": "sha256:" + "a" * 64, "size": 1},
                "layers": [{"mediaType": "m", "digest": "sha256:../../etc/passwd", "size": 1}],
            },
            "invalid digest",
        ),
        (
            {
                "schemaVersion": 2,
                "config": {"mediaType": "x", "digest": "sha256:" + "a" * 64, "size": -1},
                "layers": [],
            },
            "size",
        ),
    ],
)
def test_malformed_manifests_are_refused(body: dict[str, object], says: str) -> None:
    with pytest.raises(InvalidManifestError, match=says):
        mf.parse_manifest(json.dumps(body).encode())


def test_blob_keys_come_only_from_checked_digests() -> None:
    assert mf.blob_key("sha256:" + "0" * 64) == "blobs/sha256/" + "0" * 64
    with pytest.raises(InvalidManifestError):
        mf.blob_key("sha256:../../x")
