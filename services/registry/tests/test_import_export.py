"""Open WebUI files in and out: every shape, all or nothing, round trips."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

if TYPE_CHECKING:
    from conftest import Registry

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "examples" / "openwebui"


def _example(name: str) -> bytes:
    path = SHARED / name
    assert path.is_file(), f"{path} is missing: the shared examples folder must sit beside the repository"
    return path.read_bytes()


def _png(size: tuple[int, int] = (400, 300), color: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def _import(registry: Registry, body: Any, query: str = "", headers: dict[str, str] | None = None) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return registry.client.post(
        f"/api/v1/models/import{query}",
        content=raw,
        headers={**(headers or registry.as_user("alice")), "Content-Type": "application/json"},
    )


def test_every_example_file_imports(registry: Registry) -> None:
    for name in ("v0.11-single-export.json", "v0.11-import-api-body.json", "legacy-info-wrapped.json"):
        response = _import(registry, _example(name), "?mode=upsert")
        assert response.status_code == 200, (name, response.text)
        report = response.json()
        assert report["created"] + report["updated"] + report["unchanged"] == ["python-tutor"], (name, report)
    model = registry.client.get("/api/v1/models/python-tutor", headers=registry.as_user("alice")).json()
    assert model["base_model_id"] == "llama3.1:8b"


def test_placeholder_avatar_is_dropped_with_a_warning(registry: Registry) -> None:
    report = _import(registry, _example("v0.11-single-export.json")).json()
    assert report["created"] == ["python-tutor"]
    assert any("avatar" in w["message"] for w in report["warnings"]), report["warnings"]


def test_shapes_single_object_models_wrapper_and_string_tags(registry: Registry) -> None:
    single = {"id": "one", "name": "One", "base_model_id": "llama3.1:8b", "meta": {"tags": ["x"]}}
    assert _import(registry, single).json()["created"] == ["one"]
    wrapped = {
        "models": [{"id": "two", "name": "Two", "base_model_id": "llama3.1:8b", "meta": {"suggestion_prompts": None}}]
    }
    assert _import(registry, wrapped).json()["created"] == ["two"]


def test_all_or_nothing_lists_each_bad_item(registry: Registry) -> None:
    items = [
        {"id": "good", "name": "Good", "base_model_id": "llama3.1:8b"},
        {"id": "bad temp", "name": "Bad", "base_model_id": "llama3.1:8b", "params": {"temperature": 9}},
        {"id": "good2", "name": "", "base_model_id": "llama3.1:8b"},
    ]
    response = _import(registry, items)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "import_rejected" and "nothing was imported" in error["message"]
    bad = {e["index"]: e for e in error["details"]["errors"]}
    assert set(bad) == {1, 2}
    assert "temperature" in bad[1]["reason"] and "name" in bad[2]["reason"]
    listed = registry.client.get("/api/v1/models?include_hidden=true", headers=registry.admin).json()["items"]
    assert listed == []


def test_create_mode_refuses_existing_upsert_updates_and_reports_unchanged(registry: Registry) -> None:
    first = [{"id": "m", "name": "M", "base_model_id": "llama3.1:8b", "params": {"temperature": 0.1}}]
    assert _import(registry, first).json()["created"] == ["m"]
    again = _import(registry, first)
    assert again.status_code == 422 and "mode=upsert" in again.text
    assert _import(registry, first, "?mode=upsert").json()["unchanged"] == ["m"]
    changed = [{**first[0], "params": {"temperature": 0.5}}]
    assert _import(registry, changed, "?mode=upsert").json()["updated"] == ["m"]
    model = registry.client.get("/api/v1/models/m", headers=registry.as_user("alice")).json()
    assert model["params"]["temperature"] == 0.5 and model["version"] == 2
    stranger = _import(registry, changed, "?mode=upsert", headers=registry.as_user("mallory"))
    assert stranger.status_code == 422 and "cannot change" in stranger.text


def test_dry_run_writes_nothing(registry: Registry) -> None:
    report = _import(registry, [{"id": "d", "name": "D", "base_model_id": "llama3.1:8b"}], "?dry_run=true").json()
    assert report["dry_run"] is True and report["created"] == ["d"]
    assert registry.client.get("/api/v1/models/d", headers=registry.admin).status_code == 404


def test_missing_base_imports_with_a_warning_and_reports_unusable(registry: Registry) -> None:
    report = _import(registry, [{"id": "far", "name": "Far", "base_model_id": "mistral:7b"}]).json()
    assert report["created"] == ["far"]
    assert any("mistral:7b" in w["message"] for w in report["warnings"])
    effective = registry.client.get("/api/v1/models/far/effective", headers=registry.as_user("alice")).json()
    assert effective["usable"] is False and "mistral:7b" in effective["problems"][0]


def test_cycles_inside_one_file_are_refused(registry: Registry) -> None:
    items = [
        {"id": "x", "name": "X", "base_model_id": "y"},
        {"id": "y", "name": "Y", "base_model_id": "x"},
    ]
    response = _import(registry, items)
    assert response.status_code == 422 and "leads back" in response.text


def test_limits_give_413(make_registry: Any) -> None:
    small = make_registry(max_import_bytes=2_000, max_import_items=2)
    small.add_base()
    big = [{"id": f"m{i}", "name": "x" * 100, "base_model_id": "llama3.1:8b"} for i in range(30)]
    too_big = _import(small, big)
    assert too_big.status_code == 413 and "2000" in too_big.json()["error"]["message"]
    many = [{"id": f"m{i}", "base_model_id": "llama3.1:8b", "name": "n"} for i in range(3)]
    too_many = _import(small, many)
    assert too_many.status_code == 413


def test_invalid_json_is_422(registry: Registry) -> None:
    response = _import(registry, b"{not json")
    assert response.status_code == 422 and "line 1" in response.json()["error"]["message"]


def test_multipart_upload_and_data_uri_avatar(registry: Registry) -> None:
    data_uri = "data:image/png;base64," + base64.b64encode(_png()).decode()
    body = [{"id": "pic", "name": "Pic", "base_model_id": "llama3.1:8b", "meta": {"profile_image_url": data_uri}}]
    response = registry.client.post(
        "/api/v1/models/import",
        files={"file": ("models.json", json.dumps(body).encode(), "application/json")},
        headers=registry.as_user("alice"),
    )
    assert response.status_code == 200, response.text
    avatar = registry.client.get("/api/v1/models/pic/avatar", headers=registry.as_user("alice"))
    assert avatar.status_code == 200 and avatar.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(avatar.content))
    assert max(image.size) == 256


def _normalise_export(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for item in items:
        for key in ("created_at", "updated_at", "user_id"):
            item.pop(key, None)
    return sorted(items, key=lambda m: m["id"])


def test_export_import_export_round_trip(make_registry: Any) -> None:
    source = make_registry()
    source.add_base()
    alice = source.as_user("alice")
    _import(source, _example("v0.11-single-export.json"))
    source.create(alice, id="other", params={"seed": 7, "x_custom": [1, 2]}, meta={"tags": ["t"], "extra": {"k": "v"}})
    source.client.put(
        "/api/v1/models/other/avatar", files={"file": ("a.png", _png((64, 64)), "image/png")}, headers=alice
    )
    exported = source.client.get("/api/v1/models/export", headers=alice).json()

    target = make_registry()
    target.add_base()
    report = _import(target, exported, headers=target.as_user("alice")).json()
    assert sorted(report["created"]) == ["other", "python-tutor"]
    again = target.client.get("/api/v1/models/export", headers=target.as_user("alice")).json()
    assert _normalise_export(again) == _normalise_export(exported)


def test_export_all_from_rows_equals_each_model_exported_through_its_model(registry: Registry) -> None:
    """Export-all encodes rows straight from the database; one-model export goes through the validated model
    objects. Both must give the same objects for every kind of content."""
    alice = registry.as_user("alice")
    for name in ("v0.11-single-export.json", "legacy-info-wrapped.json"):
        assert _import(registry, _example(name), "?mode=upsert").status_code == 200
    registry.create(
        alice,
        id="rich",
        params={"system": "Be kind.", "temperature": 0.3, "stop": "END", "x_custom": [1, {"a": None}]},
        meta={
            "description": "many fields",
            "tags": ["a", "b"],
            "capabilities": {"vision": True, "extra_cap": 1},
            "suggestion_prompts": [{"title": ["Hi", "there"], "content": "Say hi", "extra": True}],
            "toolIds": ["web"],
            "filterIds": ["f"],
            "actionIds": ["act"],
            "unknown": {"nested": [1, 2]},
        },
        access={
            "public_read": True,
            "grants": [{"principal_type": "group", "principal_id": "g", "permission": "read"}],
        },
        hidden=True,
    )
    registry.create(alice, id="bare", enabled=False)
    registry.create(alice, id="chained", base_model_id="rich")
    registry.client.put(
        "/api/v1/models/bare/avatar", files={"file": ("a.png", _png((32, 32)), "image/png")}, headers=alice
    )
    response = registry.client.get("/api/v1/models/export", headers=alice)
    assert response.status_code == 200
    everything = response.json()
    assert [m["id"] for m in everything] == sorted(["python-tutor", "rich", "bare", "chained"])
    for item in everything:
        one = registry.client.get(f"/api/v1/models/{item['id']}/export", headers=alice)
        assert one.status_code == 200, one.text
        assert item == one.json()[0], item["id"]
    bare = next(m for m in everything if m["id"] == "bare")
    assert bare["meta"]["profile_image_url"].startswith("data:image/")
    # Another user sees only what they may read: the public one (and nothing hidden leaks beyond that).
    bob = registry.client.get("/api/v1/models/export", headers=registry.as_user("bob")).json()
    assert [m["id"] for m in bob] == ["rich"]
