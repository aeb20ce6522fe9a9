"""Bad input never reaches a 500: each row of the fuzzing report answers with a clear 4xx in the shared shape,
and nothing is written."""

from __future__ import annotations

import json
import re
import struct
import zlib
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Registry


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"], body
    return body["error"]


def _no_models(registry: Registry) -> None:
    assert registry.client.get("/api/v1/models?include_hidden=true", headers=registry.admin).json()["items"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "bad\u0000name"}, "name"),
        ({"params": {"system": "be\u0000 kind"}}, "params.system"),
        ({"meta": {"ke\u0000y": "v"}}, "meta"),
        ({"meta": {"tags": ["ok", "b\u0000d"]}}, "meta.tags[1]"),
        ({"name": "lone \ud800 surrogate"}, "name"),
    ],
)
def test_characters_postgresql_cannot_hold_are_refused_naming_the_field(
    registry: Registry, body: dict[str, Any], field: str
) -> None:
    registry.add_base()
    payload = {"id": "m1", "name": "M", "base_model_id": "llama3.1:8b", **body}
    raw = json.dumps(payload)  # json.dumps writes NUL and lone surrogates as \u escapes, as a client would
    response = registry.client.post(
        "/api/v1/models", content=raw, headers={**registry.as_user("alice"), "Content-Type": "application/json"}
    )
    error = _error(response, 422)
    assert field in error["message"] and error["details"][0]["field"] == field
    _no_models(registry)


def test_a_nul_in_a_group_name_is_a_422(registry: Registry) -> None:
    response = registry.client.post("/api/v1/groups", json={"id": "g", "name": "a\u0000b"}, headers=registry.admin)
    assert "name" in _error(response, 422)["message"]
    groups = registry.client.get("/api/v1/groups", headers=registry.admin).json()
    assert "g" not in json.dumps(groups)


def test_bodies_that_are_not_utf8_or_json_get_a_400_in_the_shared_shape(registry: Registry) -> None:
    headers = {**registry.admin, "Content-Type": "application/json"}
    not_utf8 = registry.client.post("/api/v1/models", content=b'{"id": "\xff\xfe"}', headers=headers)
    assert "UTF-8" in _error(not_utf8, 400)["message"]
    deep = registry.client.post("/api/v1/models", content="[" * 100_000 + "]" * 100_000, headers=headers)
    assert deep.status_code in (400, 422) and "error" in deep.json()
    _no_models(registry)


def test_framework_errors_use_the_shared_shape_and_405_says_allow(registry: Registry) -> None:
    missing = registry.client.get("/api/v1/no-such-route", headers=registry.admin)
    assert _error(missing, 404)["code"] == "not_found"
    wrong = registry.client.put("/api/v1/models/import", headers=registry.admin)
    assert _error(wrong, 405)["code"] == "method_not_allowed" and "POST" in wrong.headers["Allow"]


def test_an_empty_multipart_import_is_a_422(registry: Registry) -> None:
    response = registry.client.post(
        "/api/v1/models/import", files={"other": ("x.txt", b"x", "text/plain")}, headers=registry.admin
    )
    assert "file" in _error(response, 422)["message"]


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` × ``height`` pixels: a few hundred bytes that would decode to gigapixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [8_000, 20_000])
def test_a_decompression_bomb_avatar_is_a_413_before_decoding(registry: Registry, side: int) -> None:
    registry.add_base()
    alice = registry.as_user("alice")
    registry.create(alice, id="m")
    response = registry.client.put(
        "/api/v1/models/m/avatar", files={"file": ("bomb.png", _png_header(side, side), "image/png")}, headers=alice
    )
    assert "pixels" in _error(response, 413)["message"]
    model = registry.client.get("/api/v1/models/m", headers=alice).json()
    assert not model["meta"].get("profile_image_url")


@pytest.mark.parametrize(
    "model_id", ["../../etc/passwd", "a/./b", "..", "a/..", "tab\there", "nul\u0001x", "line-end\n"]
)
def test_ids_unsafe_in_urls_file_names_and_keys_are_refused(registry: Registry, model_id: str) -> None:
    registry.add_base()
    response = registry.client.post(
        "/api/v1/models",
        json={"id": model_id, "name": "M", "base_model_id": "llama3.1:8b"},
        headers=registry.as_user("alice"),
    )
    assert "id" in _error(response, 422)["message"]
    base = registry.client.post("/api/v1/base-models", json={"id": model_id}, headers=registry.admin)
    assert "id" in _error(base, 422)["message"]
    _no_models(registry)


@pytest.mark.parametrize(
    "model_id",
    ["../../etc/passwd", "a/./b", "..", "a/..", "./a", "tab\there", "nul\u0001x", "line-end\n", "\u00a0", ""]
    + ["hf.co/user/repo.v2:Q4_K_M", "llama3.1:8b", ".x", "a/.b", "é", "x\U0010fffe"],
)
def test_the_documented_id_pattern_is_the_id_rule(model_id: str) -> None:
    from modelhub_registry.domain.model_file import ID_PATTERN, id_problem

    assert bool(re.search(ID_PATTERN, model_id)) == (id_problem(model_id) is None)


def test_ids_with_dots_inside_segments_still_work(registry: Registry) -> None:
    registry.add_base()
    registry.create(registry.as_user("alice"), id="hf.co/user/repo.v2:Q4_K_M")


def test_an_import_on_a_private_base_warns_as_for_a_missing_one(registry: Registry) -> None:
    registry.add_base()
    registry.create(registry.as_user("alice"), id="private-base")
    items = [
        {"id": "on-private", "name": "P", "base_model_id": "private-base"},
        {"id": "on-ghost", "name": "G", "base_model_id": "ghost"},
    ]
    response = registry.client.post("/api/v1/models/import?dry_run=true", json=items, headers=registry.as_user("bob"))
    assert response.status_code == 200, response.text
    warnings = {w["id"]: w["message"] for w in response.json()["warnings"]}
    assert warnings["on-private"].replace("private-base", "X") == warnings["on-ghost"].replace("ghost", "X")
    assert "cannot read" in warnings["on-ghost"]


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://[fe80::1]:11434",
        "http://[::ffff:169.254.169.254]/",
    ],
)
def test_metadata_and_link_local_connections_are_refused_always(registry: Registry, url: str) -> None:
    response = registry.client.post("/api/v1/connections", json={"type": "ollama", "url": url}, headers=registry.admin)
    assert "never allowed" in _error(response, 422)["message"]
    assert registry.client.get("/api/v1/connections", headers=registry.admin).json()["items"] == []


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:22", "http://[::1]:6379", "http://10.0.0.5:11434", "http://localhost:11434"]
)
def test_loopback_and_private_connections_need_the_setting(make_registry: Any, url: str) -> None:
    strict = make_registry(allow_private_urls=False)
    response = strict.client.post("/api/v1/connections", json={"type": "ollama", "url": url}, headers=strict.admin)
    assert "allow_private_urls" in _error(response, 422)["message"]
    assert strict.client.get("/api/v1/connections", headers=strict.admin).json()["items"] == []
