"""``modelhub models ...`` against a real registry."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

if TYPE_CHECKING:
    from conftest import LiveRegistry


def first_column(table: str) -> list[str]:
    """The first cell of each body row of a rich table (rows are drawn with "│")."""
    return [line.split("│")[1].strip() for line in table.splitlines() if line.startswith("│")]


def _model(registry: LiveRegistry, model_id: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(registry.ok("models", "show", model_id, "--json"))
    return result


def _create(registry: LiveRegistry, model_id: str, *extra: str) -> None:
    registry.ok("models", "create", "--id", model_id, "--base", "llama3.1:8b", *extra)


def test_create_with_flags_then_list_and_show(live_registry: LiveRegistry) -> None:
    output = live_registry.ok(
        "models",
        "create",
        "--id",
        "hf.co/acme/support:Q4_K_M",
        "--base",
        "llama3.1:8b",
        "--name",
        "Support bot",
        "--system",
        "You help {{ USER_NAME }} with tickets.",
        "--temperature",
        "0.3",
        "--top-p",
        "0.9",
        "--max-tokens",
        "512",
        "--tag",
        "support",
        "--tag",
        "internal",
        "--description",
        "Answers tickets",
        "--vision",
    )
    assert "created model 'hf.co/acme/support:Q4_K_M' (version 1)" in output

    listing = live_registry.ok("models", "list")
    row = next(line for line in listing.splitlines() if "hf.co/acme/support:Q4_K_M" in line)
    for cell in ("Support bot", "llama3.1:8b", "support, internal", "root"):
        assert cell in row

    model = _model(live_registry, "hf.co/acme/support:Q4_K_M")
    assert model["params"] == {
        "system": "You help {{ USER_NAME }} with tickets.",
        "temperature": 0.3,
        "top_p": 0.9,
        "max_tokens": 512,
    }
    assert model["meta"]["tags"] == ["support", "internal"]
    assert model["meta"]["capabilities"]["vision"] is True
    assert model["meta"]["description"] == "Answers tickets"

    shown = live_registry.ok("models", "show", "hf.co/acme/support:Q4_K_M")
    assert "You help {{ USER_NAME }} with tickets." in shown and "Answers tickets" in shown


def test_create_from_a_yaml_file_with_a_flag_on_top(live_registry: LiveRegistry, tmp_path: Path) -> None:
    spec = tmp_path / "writer.yaml"
    spec.write_text(
        "id: writer\n"
        "base_model_id: llama3.1:8b\n"
        "name: Writer\n"
        "params:\n"
        "  system: |\n"
        "    You write release notes.\n"
        "  temperature: 0.7\n"
        "meta:\n"
        "  tags: [docs]\n"
    )
    live_registry.ok("models", "create", "--file", str(spec), "--temperature", "0.2")
    model = _model(live_registry, "writer")
    assert model["name"] == "Writer"
    assert model["params"] == {"system": "You write release notes.\n", "temperature": 0.2}
    assert model["meta"]["tags"] == ["docs"]


def test_invalid_values_are_refused_with_the_servers_message(live_registry: LiveRegistry) -> None:
    output = live_registry.fails("models", "create", "--id", "hot", "--base", "llama3.1:8b", "--temperature", "5")
    assert "params.temperature" in output and "HTTP 422" in output
    assert "hint:" in output


def test_edit_with_a_stale_version_is_a_clear_conflict(live_registry: LiveRegistry) -> None:
    _create(live_registry, "editor")
    assert "now at version 2" in live_registry.ok("models", "edit", "editor", "--temperature", "0.5", "--version", "1")

    output = live_registry.fails("models", "edit", "editor", "--name", "Stale", "--version", "1")
    assert "is at version 2, not 1" in output and "HTTP 409" in output
    assert "modelhub models show editor" in output
    assert _model(live_registry, "editor")["name"] == "editor"

    assert "nothing to change" in live_registry.fails("models", "edit", "editor")


def test_edit_from_a_patch_file_removes_keys_set_to_null(live_registry: LiveRegistry, tmp_path: Path) -> None:
    _create(live_registry, "patched", "--temperature", "0.4", "--top-p", "0.5")
    patch = tmp_path / "patch.json"
    patch.write_text(json.dumps({"params": {"top_p": None}, "meta": {"description": "now documented"}}))
    live_registry.ok("models", "edit", "patched", "--file", str(patch))
    model = _model(live_registry, "patched")
    assert model["params"] == {"temperature": 0.4}
    assert model["meta"]["description"] == "now documented"


def test_clone_hide_and_list_filters(live_registry: LiveRegistry) -> None:
    _create(live_registry, "original", "--name", "Original")
    assert "cloned 'original' as 'original-clone' (Original (Clone))" in live_registry.ok("models", "clone", "original")
    live_registry.ok("models", "hide", "original")

    assert first_column(live_registry.ok("models", "list")) == ["original-clone"]
    assert sorted(first_column(live_registry.ok("models", "list", "--hidden"))) == ["original", "original-clone"]

    with_hidden = json.loads(live_registry.ok("models", "list", "--hidden", "--json"))
    assert {m["id"]: m["hidden"] for m in with_hidden["items"]} == {"original": True, "original-clone": False}

    live_registry.ok("models", "disable", "original-clone")
    assert json.loads(live_registry.ok("models", "list", "--hidden", "--json"))["items"][0]["id"] == "original"
    live_registry.ok("models", "unhide", "original")
    live_registry.ok("models", "enable", "original-clone")
    assert len(json.loads(live_registry.ok("models", "list", "--json"))["items"]) == 2


def test_list_all_follows_every_page(live_registry: LiveRegistry) -> None:
    for index in range(5):
        _create(live_registry, f"paged-{index}")
    first = live_registry.run("models", "list", "--limit", "2")
    assert first.exit_code == 0 and "add --all" in first.output
    everything = json.loads(live_registry.ok("models", "list", "--limit", "2", "--all", "--json"))
    assert sorted(m["id"] for m in everything["items"]) == [f"paged-{i}" for i in range(5)]
    assert everything["next_cursor"] is None


def test_export_then_import_with_upsert_reports_unchanged(live_registry: LiveRegistry, tmp_path: Path) -> None:
    _create(live_registry, "exported", "--system", "Be brief.", "--tag", "ops")
    target = tmp_path / "one.json"
    assert f"exported to {target}" in live_registry.ok("models", "export", "exported", "-o", str(target))
    exported = json.loads(target.read_text())
    assert isinstance(exported, list) and exported[0]["id"] == "exported"

    report = live_registry.ok("models", "import", str(target), "--upsert")
    assert "0 created, 0 updated, 1 unchanged" in report
    assert any("unchanged" in line and "exported" in line for line in report.splitlines())

    # Without -o, the file takes the name the registry suggests, in the current directory.
    live_registry.ok("models", "export", "--all")
    [backup] = list(Path.cwd().glob("models-export-*.json"))
    assert [m["id"] for m in json.loads(backup.read_text())] == ["exported"]

    exported[0]["name"] = "Renamed"
    target.write_text(json.dumps(exported))
    dry = json.loads(live_registry.ok("models", "import", str(target), "--upsert", "--dry-run", "--json"))
    assert dry["updated"] == ["exported"] and dry["dry_run"] is True
    assert _model(live_registry, "exported")["name"] == "exported"


def test_import_creates_from_yaml_and_refuses_existing_ids_without_upsert(
    live_registry: LiveRegistry, tmp_path: Path
) -> None:
    source = tmp_path / "models.yaml"
    source.write_text("- id: from-yaml\n  base_model_id: llama3.1:8b\n  name: From YAML\n  params: {}\n  meta: {}\n")
    assert "1 created" in live_registry.ok("models", "import", str(source))
    output = live_registry.fails("models", "import", str(source))
    assert "already exists; import with mode=upsert" in output


def test_import_of_a_bad_file_lists_each_bad_item_and_writes_nothing(
    live_registry: LiveRegistry, tmp_path: Path
) -> None:
    items = [
        {"id": "fine", "base_model_id": "llama3.1:8b", "name": "Fine", "params": {}, "meta": {}},
        {"id": "too-hot", "base_model_id": "llama3.1:8b", "name": "Hot", "params": {"temperature": 9}, "meta": {}},
        {"id": "has space", "base_model_id": "llama3.1:8b", "name": "Spaced", "params": {}, "meta": {}},
    ]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(items))
    result = live_registry.run("models", "import", str(bad))
    assert result.exit_code == 1
    assert "2 of 3 items are invalid; nothing was imported" in result.output
    lines = result.output.splitlines()
    assert any("1" in line and "too-hot" in line and "temperature" in line for line in lines)
    assert any("2" in line and "has space" in line for line in lines)
    assert json.loads(live_registry.ok("models", "list", "--hidden", "--disabled", "--json"))["items"] == []

    not_json = tmp_path / "broken.json"
    not_json.write_text("{ not json")
    assert "HTTP 422" in live_registry.fails("models", "import", str(not_json))


def test_history_and_restore(live_registry: LiveRegistry) -> None:
    _create(live_registry, "historic", "--name", "First")
    live_registry.ok("models", "edit", "historic", "--name", "Second")
    history = live_registry.ok("models", "history", "historic")
    assert "created" in history and "updated" in history and "name" in history
    versions = [r["version"] for r in json.loads(live_registry.ok("models", "history", "historic", "--json"))["items"]]
    assert sorted(versions) == [1, 2]

    assert "it is now at version 3" in live_registry.ok("models", "restore", "historic", "1")
    assert _model(live_registry, "historic")["name"] == "First"


def test_effective_shows_the_chain_and_where_each_param_comes_from(live_registry: LiveRegistry) -> None:
    _create(live_registry, "parent", "--system", "Be kind.")
    live_registry.ok("models", "create", "--id", "child", "--base", "parent", "--top-p", "0.5")
    output = live_registry.ok("models", "effective", "child")
    lines = output.splitlines()
    assert any("child" in line and "model" in line for line in lines)
    assert any("llama3.1:8b" in line and "base" in line for line in lines)
    assert any("system" in line and "Be kind." in line and "parent" in line for line in lines)
    assert any("top_p" in line and "0.5" in line and "child" in line for line in lines)
    assert any("temperature" in line and "0.8" in line and "llama3.1:8b" in line for line in lines)
    assert "precedence:" in output

    result = json.loads(live_registry.ok("models", "effective", "child", "--json"))
    assert [link["id"] for link in result["chain"]] == ["child", "parent", "llama3.1:8b"]


def test_share_avatar_and_rm(live_registry: LiveRegistry, tmp_path: Path) -> None:
    _create(live_registry, "pictured")
    image = tmp_path / "logo.png"
    buffer = io.BytesIO()
    Image.new("RGB", (400, 300), (200, 30, 30)).save(buffer, format="PNG")
    image.write_bytes(buffer.getvalue())
    live_registry.ok("models", "avatar", "pictured", str(image))
    assert _model(live_registry, "pictured")["meta"]["profile_image_url"] == "/api/v1/models/pictured/avatar"

    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    assert "HTTP 415" in live_registry.fails("models", "avatar", "pictured", str(not_image))

    payload = json.loads(live_registry.ok("models", "share", "pictured", "--json"))
    assert payload["url"].startswith("https://openwebui.com/") and payload["model"]["id"] == "pictured"
    shared = tmp_path / "shared.json"
    assert "upload" in live_registry.ok("models", "share", "pictured", "-o", str(shared))
    assert json.loads(shared.read_text())["id"] == "pictured"

    refused = live_registry.run("models", "rm", "pictured", input="n\n")
    assert refused.exit_code == 1
    _model(live_registry, "pictured")
    assert "deleted model 'pictured'" in live_registry.ok("models", "rm", "pictured", "--yes")
    output = live_registry.fails("models", "show", "pictured")
    assert "HTTP 404" in output and "modelhub models list" in output


def test_dot_segment_ids_are_refused_and_dots_inside_segments_work(live_registry: LiveRegistry) -> None:
    # A '..' segment would make the URL (and an export file name or S3 key) point somewhere else: refused.
    refused = live_registry.fails("models", "create", "--id", "../users", "--base", "llama3.1:8b")
    assert "'..' path segment" in refused
    _create(live_registry, "..users/v1.2")
    assert _model(live_registry, "..users/v1.2")["id"] == "..users/v1.2"
    live_registry.ok("models", "hide", "..users/v1.2")
    assert "deleted model '..users/v1.2'" in live_registry.ok("models", "rm", "..users/v1.2", "--yes")
