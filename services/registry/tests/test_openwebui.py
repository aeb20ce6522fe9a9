"""Reading and writing Open WebUI's model files: every import shape, item errors, avatars and the round trip."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from modelhub_registry.domain.limits import Limits
from modelhub_registry.domain.model_file import Grant, ModelFile, ModelFileSpec
from modelhub_registry.domain.openwebui import (
    SHARE_URL,
    DataUriError,
    DecodedImage,
    ImportDocumentError,
    ImportItem,
    ItemError,
    decode_data_uri,
    encode_data_uri,
    export_filename,
    normalize_item,
    parse_import_document,
    share_payload,
    to_openwebui,
)

LIMITS = Limits()
SHARED = Path(__file__).resolve().parents[3].parent / "shared"
EXAMPLES = SHARED / "examples" / "openwebui"
PLACEHOLDER_AVATAR = "data:image/webp;base64,UklGR...<resized 250x250 webp data URL>"


def example_files() -> list[Path]:
    if not EXAMPLES.is_dir():
        pytest.fail(f"Open WebUI example files not found: expected them in {EXAMPLES} (the shared folder)")
    files = sorted(EXAMPLES.glob("*.json"))
    if not files:
        pytest.fail(f"{EXAMPLES} holds no *.json example files")
    return files


def minimal(**fields: Any) -> dict[str, Any]:
    return {"id": "python-tutor", "name": "Python Tutor", "base_model_id": "llama3.1:8b", **fields}


def document(value: Any) -> bytes:
    return json.dumps(value).encode()


def imported(item: Any, limits: Limits = LIMITS) -> ImportItem:
    result = normalize_item(item, 0, limits)
    assert isinstance(result, ImportItem), result
    return result


def refused(item: Any, limits: Limits = LIMITS) -> ItemError:
    result = normalize_item(item, 0, limits)
    assert isinstance(result, ItemError), result
    return result


def document_error(raw: bytes, limits: Limits = LIMITS) -> ImportDocumentError:
    with pytest.raises(ImportDocumentError) as caught:
        parse_import_document(raw, limits)
    return caught.value


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def stored(item: ImportItem, owner: str = "owner-1") -> ModelFile:
    """What the service would store for an imported item: the spec plus owner, times and a first version."""
    created = item.created_at or datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    return ModelFile.model_validate(
        {
            **item.spec.model_dump(),
            "owner_id": item.owner_hint or owner,
            "created_at": created,
            "updated_at": item.updated_at or created,
            "version": 1,
        }
    )


def reimported(item: ImportItem) -> ImportItem:
    avatar_uri = encode_data_uri(item.avatar) if item.avatar else None
    exported = to_openwebui(stored(item), avatar_data_uri=avatar_uri)
    # Through bytes, as a downloaded file would travel.
    (again,) = parse_import_document(json.dumps([exported]).encode(), LIMITS)
    return imported(again)


# --- the example files -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_example_files_parse_and_normalise(path: Path) -> None:
    items = parse_import_document(path.read_bytes(), LIMITS)

    assert len(items) == 1
    item = imported(items[0])
    assert item.spec.id == "python-tutor"
    assert item.spec.base_model_id == "llama3.1:8b"
    assert item.spec.name == "Python Tutor"
    assert item.spec.enabled is True
    assert item.spec.hidden is False


def test_v011_export_keeps_every_field() -> None:
    (raw,) = parse_import_document((EXAMPLES / "v0.11-single-export.json").read_bytes(), LIMITS)
    item = imported(raw)
    spec = item.spec

    assert item.owner_hint == "5b1c0f5e-0000-4000-8000-000000000001"
    assert item.created_at == datetime.fromtimestamp(1785000000, UTC)
    assert item.updated_at == datetime.fromtimestamp(1785000100, UTC)
    assert spec.params.temperature == 0.3
    assert spec.params.stop == ["<|eot_id|>"]
    assert spec.params.model_extra == {"function_calling": "native", "custom_params": {"think": "false"}}
    assert spec.meta.tags == ["education"]
    assert spec.meta.tool_ids == ["calculator"]
    assert spec.meta.filter_ids == ["pii_redactor"]
    assert spec.meta.default_filter_ids == ["pii_redactor"]
    assert spec.meta.action_ids == ["add_to_memories"]
    assert spec.meta.knowledge_ids == ["0b7c...-collection-uuid", "f3a1...-file-uuid"]
    assert spec.meta.knowledge[1].model_extra == {"context": "full"}
    assert spec.meta.capabilities.model_extra is not None
    assert spec.meta.capabilities.model_extra["web_search"] is True
    assert spec.meta.model_extra is not None
    assert set(spec.meta.model_extra) == {"skillIds", "defaultFeatureIds", "builtinTools", "tts"}
    assert spec.access.public_read is True
    assert spec.access.grants == [Grant(principal_type="group", principal_id="a1b2...-group-uuid", permission="read")]


def test_legacy_info_wrapped_example_is_private_without_access() -> None:
    (raw,) = parse_import_document((EXAMPLES / "legacy-info-wrapped.json").read_bytes(), LIMITS)
    item = imported(raw)

    assert item.spec.params.system == "..."
    assert item.spec.meta.description == "..."
    assert item.spec.access.public_read is False
    assert item.spec.access.grants == []
    assert item.warnings == []


def test_example_placeholder_avatar_is_dropped_with_a_warning() -> None:
    (raw,) = parse_import_document((EXAMPLES / "v0.11-import-api-body.json").read_bytes(), LIMITS)
    item = imported(raw)

    assert item.avatar is None
    assert item.avatar_url is None
    assert item.spec.meta.profile_image_url is None
    assert len(item.warnings) == 1
    assert "profile_image_url" in item.warnings[0]
    assert "dropped" in item.warnings[0]
    assert "base64" in item.warnings[0]


# --- document shapes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "count"),
    [
        pytest.param([minimal(), minimal(id="other")], 2, id="flat array"),
        pytest.param({"models": [minimal(), minimal(id="other")]}, 2, id="api body"),
        pytest.param(minimal(), 1, id="single object"),
        pytest.param(
            [{"id": "python-tutor", "object": "model", "owned_by": "ollama", "info": minimal()}],
            1,
            id="legacy info",
        ),
        pytest.param(
            {"id": "python-tutor", "object": "model", "preset": True, "info": minimal()}, 1, id="single legacy"
        ),
    ],
)
def test_every_document_shape_gives_its_items(value: Any, count: int) -> None:
    items = parse_import_document(document(value), LIMITS)

    assert len(items) == count
    assert [imported(item).spec.id for item in items] == ["python-tutor", "other"][:count]


def test_byte_order_mark_is_tolerated() -> None:
    assert parse_import_document(b"\xef\xbb\xbf" + document([minimal()]), LIMITS) == [minimal()]


def test_info_fills_id_and_name_from_the_wrapper() -> None:
    info = minimal()
    del info["id"], info["name"]
    item = imported({"id": "python-tutor", "name": "Python Tutor", "object": "model", "info": info})

    assert (item.spec.id, item.spec.name) == ("python-tutor", "Python Tutor")


def test_informal_fields_are_accepted() -> None:
    item = imported(
        minimal(
            user={"id": "u1", "name": "Ann"},
            write_access=True,
            version_id="v-123",
            background_image_data="data:image/png;base64,AAAA",
            something_new={"x": 1},
            meta={
                "tags": ["a", {"name": "b"}, " a "],
                "suggestion_prompts": None,
                "knowledge": None,
                "toolIds": None,
                "i18n": {"de": {"name": "Python-Lehrer"}},
                "voice": None,
                "background_image_url": "https://example.com/bg.png",
            },
        )
    )

    assert item.spec.meta.tags == ["a", "b"]
    assert item.spec.meta.suggestion_prompts == []
    assert item.spec.meta.model_extra == {
        "i18n": {"de": {"name": "Python-Lehrer"}},
        "voice": None,
        "background_image_url": "https://example.com/bg.png",
    }
    assert item.warnings == []


def test_suggestions_with_only_content_or_a_plain_title() -> None:
    item = imported(minimal(meta={"suggestion_prompts": [{"content": "Hi"}, {"title": "Old style", "content": "Go"}]}))

    assert [(p.title, p.content) for p in item.spec.meta.suggestion_prompts] == [
        (None, "Hi"),
        ("Old style", "Go"),
    ]


def test_is_active_and_meta_hidden_become_flags() -> None:
    item = imported(minimal(is_active=False, meta={"hidden": True, "description": "d"}))

    assert item.spec.enabled is False
    assert item.spec.hidden is True
    assert "hidden" not in (item.spec.meta.model_extra or {})
    assert imported(minimal(is_active=None)).spec.enabled is True


def test_bad_timestamps_are_ignored_with_a_warning() -> None:
    item = imported(minimal(created_at="yesterday", updated_at=1785000000000))

    assert item.created_at is None
    assert item.updated_at is None
    assert len(item.warnings) == 2
    assert item.warnings[0].startswith("created_at:")


# --- access --------------------------------------------------------------------------------------------


def test_absent_access_is_private() -> None:
    access = imported(minimal()).spec.access

    assert access.public_read is False
    assert access.grants == []


def test_legacy_access_control_null_is_public_read() -> None:
    access = imported(minimal(access_control=None)).spec.access

    assert access.public_read is True
    assert access.grants == []


def test_legacy_access_control_empty_is_private() -> None:
    access = imported(minimal(access_control={})).spec.access

    assert access.public_read is False
    assert access.grants == []


def test_legacy_access_control_lists_become_grants() -> None:
    access_control = {
        "read": {"group_ids": ["g1"], "user_ids": ["u1", "u1"]},
        "write": {"group_ids": ["g2"], "user_ids": []},
    }
    access = imported(minimal(access_control=access_control)).spec.access

    assert access.public_read is False
    assert access.grants == [
        Grant(principal_type="group", principal_id="g1", permission="read"),
        Grant(principal_type="user", principal_id="u1", permission="read"),
        Grant(principal_type="group", principal_id="g2", permission="write"),
    ]


def test_malformed_legacy_access_control_names_the_field() -> None:
    assert refused(minimal(access_control=[])).reason.startswith("access_control:")
    assert "access_control.read.user_ids[0]" in refused(minimal(access_control={"read": {"user_ids": [7]}})).reason


def test_access_grants_win_over_access_control() -> None:
    grants = [{"principal_type": "user", "principal_id": "u9", "permission": "write"}]
    access = imported(minimal(access_grants=grants, access_control=None)).spec.access

    assert access.public_read is False
    assert access.grants == [Grant(principal_type="user", principal_id="u9", permission="write")]


def test_public_write_grant_is_imported_as_public_read_with_a_warning() -> None:
    item = imported(minimal(access_grants=[{"principal_type": "user", "principal_id": "*", "permission": "write"}]))

    assert item.spec.access.public_read is True
    assert item.spec.access.grants == []
    assert "access_grants[0]" in item.warnings[0]


def test_bad_grant_names_the_field() -> None:
    error = refused(minimal(access_grants=[{"principal_type": "robot", "principal_id": "r1", "permission": "read"}]))

    assert error.reason == "access_grants[0].principal_type: must be 'user' or 'group'"


# --- bad items -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (minimal(params={"temperature": 5}), "params.temperature: must be ≤ 2"),
        (minimal(name=""), "name: must not be empty"),
        (minimal(id="python tutor"), "id: must be printable characters without whitespace"),
        (minimal(meta={"tags": [f"t{i}" for i in range(33)]}), "meta.tags: has 33 tags; the limit is 32"),
        (minimal(name=None), "name: must be a string"),
        ({"name": "No id"}, "id: is required"),
        (minimal(meta={"suggestion_prompts": [{"title": 5}]}), "meta.suggestion_prompts[0].content: is required"),
        (minimal(meta={"hidden": "maybe"}), "meta.hidden: must be true or false"),
        (minimal(is_active="maybe"), "is_active: must be true or false"),
        (minimal(meta=[]), "meta: must be an object"),
        (minimal(params=["temperature", 1]), "params: must be an object"),
        (
            minimal(meta={"knowledge": [{"id": "k1", "type": "folder"}]}),
            "meta.knowledge[0].type: must be 'collection' or 'file'",
        ),
        (minimal(info=5), "info: must be an object holding the model"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_bad_item_names_the_field(item: dict[str, Any], reason: str) -> None:
    error = refused(item)

    assert reason in error.reason
    assert error.id == item.get("id")


def test_union_member_errors_read_as_one_message() -> None:
    error = refused(minimal(meta={"suggestion_prompts": [{"title": 5, "content": "x"}]}))

    assert error.reason == "meta.suggestion_prompts[0].title: must be a list or a string"


def test_type_and_range_problems_are_reported_together() -> None:
    error = refused(minimal(name=" ", params={"temperature": 5, "top_p": -1}))

    assert error.reason == "params.temperature: must be ≤ 2; params.top_p: must be ≥ 0"
    error = refused(minimal(name=" ", params={"seed": 1}))
    assert error.reason == "name: must not be empty"


def test_item_that_is_not_an_object() -> None:
    assert normalize_item("python-tutor", 3, LIMITS) == ItemError(
        index=3, id=None, reason="item is a string, not a model object"
    )


# --- document errors -----------------------------------------------------------------------------------


def test_invalid_json_is_422_with_position() -> None:
    error = document_error(b'[{"id": "a",\n  "name": }]')

    assert (error.http_status, error.code) == (422, "invalid_json")
    assert "line 2, column 11" in error.message


def test_oversize_document_is_413() -> None:
    error = document_error(document([minimal()]), Limits(max_import_bytes=20))

    assert (error.http_status, error.code) == (413, "import_too_large")
    assert "20 bytes" in error.message
    assert "Split" in error.message


def test_too_many_items_is_413() -> None:
    error = document_error(document([minimal(), minimal()]), Limits(max_import_items=1))

    assert (error.http_status, error.code) == (413, "too_many_import_items")
    assert "limit is 1" in error.message


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"[]", "empty_import"),
        (b'{"models": []}', "empty_import"),
        (b"  \n", "empty_import"),
        (b'"python-tutor"', "unsupported_import_shape"),
        (b'{"data": []}', "unsupported_import_shape"),
        (b'{"models": {"id": "a"}}', "unsupported_import_shape"),
        (b'[{"id": "a", "name": "A", "params": {"temperature": NaN}}]', "invalid_json"),
        (b"\xff\xfe[]", "invalid_json"),
        (b"[" * 100_000, "invalid_json"),
    ],
)
def test_unreadable_documents_are_422(raw: bytes, code: str) -> None:
    error = document_error(raw)

    assert (error.http_status, error.code) == (422, code)


def test_shape_error_lists_the_accepted_shapes() -> None:
    message = document_error(b"42").message

    assert '{"models": [...]}' in message
    assert "info" in message


# --- avatars -------------------------------------------------------------------------------------------


def test_tiny_png_data_uri_is_decoded() -> None:
    png = png_bytes()
    uri = f"data:image/png;base64,{base64.b64encode(png).decode()}"

    assert decode_data_uri(uri, 1000) == DecodedImage(mime_type="image/png", data=png)
    item = imported(minimal(meta={"profile_image_url": uri}))
    assert item.avatar == DecodedImage(mime_type="image/png", data=png)
    assert item.spec.meta.profile_image_url is None
    assert item.warnings == []


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        (PLACEHOLDER_AVATAR, "invalid base64"),
        ("data:image/png;base64,iVBORw0KGgo", "invalid base64"),
        ("data:image/png;base64,iVBO Rw0K", "invalid base64"),
        ("data:image/png,%89PNG", "not base64"),
        ("data:image/png;base64", "no comma"),
        ("data:image/png;base64,", "empty"),
        ("https://example.com/a.png", "not a data: URI"),
        (f"data:image/png;base64,{base64.b64encode(bytes(2000)).decode()}", "limit"),
    ],
)
def test_bad_data_uris_are_refused_by_the_decoder(uri: str, fragment: str) -> None:
    with pytest.raises(DataUriError) as caught:
        decode_data_uri(uri, 1000)

    assert fragment in caught.value.message


def test_svg_avatar_is_dropped_with_a_warning() -> None:
    svg = base64.b64encode(b"<svg xmlns='http://www.w3.org/2000/svg'/>").decode()
    item = imported(minimal(meta={"profile_image_url": f"data:image/svg+xml;base64,{svg}"}))

    assert item.avatar is None
    assert "image/svg+xml" in item.warnings[0]


def test_oversize_avatar_is_dropped_with_a_warning() -> None:
    uri = f"data:image/png;base64,{base64.b64encode(png_bytes()).decode()}"
    item = imported(minimal(meta={"profile_image_url": uri}), Limits(max_avatar_bytes=10))

    assert item.avatar is None
    assert "limit" in item.warnings[0]


def test_web_avatar_is_kept_as_a_reference() -> None:
    item = imported(minimal(meta={"profile_image_url": "https://cdn.example.com/tutor.png"}))

    assert item.avatar is None
    assert item.avatar_url == "https://cdn.example.com/tutor.png"
    assert item.spec.meta.profile_image_url == "https://cdn.example.com/tutor.png"
    assert item.warnings == []


def test_open_webui_default_avatar_is_dropped_silently_and_other_paths_with_a_warning() -> None:
    assert imported(minimal(meta={"profile_image_url": "/static/favicon.png"})).warnings == []
    item = imported(minimal(meta={"profile_image_url": "/api/v1/files/abc/content"}))
    assert item.avatar_url is None
    assert "neither an http(s) URL nor a data: URI" in item.warnings[0]


# --- export and the round trip -------------------------------------------------------------------------


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_examples_round_trip_to_an_equal_spec(path: Path) -> None:
    for raw in parse_import_document(path.read_bytes(), LIMITS):
        first = imported(raw)
        again = reimported(first)

        assert again.spec == first.spec
        assert again.owner_hint == (first.owner_hint or "owner-1")


def test_round_trip_keeps_unknown_keys_nulls_and_the_avatar() -> None:
    png = png_bytes()
    first = imported(
        minimal(
            params={"temperature": 1, "stop": "END", "num_batch": 8, "custom": None, "top_k": None},
            meta={
                "profile_image_url": f"data:image/png;base64,{base64.b64encode(png).decode()}",
                "description": None,
                "capabilities": {"vision": True, "terminal": None},
                "suggestion_prompts": [{"title": ["a", "b"], "content": "c", "extra": 1}],
                "knowledge": [{"id": "k1", "type": "file", "context": "full"}],
                "voice": None,
                "hidden": True,
            },
            access_control={"read": {"group_ids": ["g1"]}, "write": {"user_ids": ["u2"]}},
            is_active=False,
        )
    )
    again = reimported(first)

    assert again.spec == first.spec
    assert again.avatar == DecodedImage(mime_type="image/png", data=png)
    assert again.spec.params.model_extra == {"num_batch": 8, "custom": None}
    assert again.spec.meta.model_extra == {"voice": None}


def test_export_has_open_webui_shape() -> None:
    (raw,) = parse_import_document((EXAMPLES / "v0.11-single-export.json").read_bytes(), LIMITS)
    model = stored(imported(raw))

    exported = to_openwebui(model, avatar_data_uri="data:image/png;base64,AAAA")

    assert list(exported) == [
        "id",
        "user_id",
        "base_model_id",
        "name",
        "params",
        "meta",
        "access_grants",
        "is_active",
        "created_at",
        "updated_at",
    ]
    assert exported["user_id"] == "5b1c0f5e-0000-4000-8000-000000000001"
    assert exported["created_at"] == 1785000000
    assert exported["updated_at"] == 1785000100
    assert exported["params"]["function_calling"] == "native"
    meta = exported["meta"]
    assert meta["profile_image_url"] == "data:image/png;base64,AAAA"
    assert meta["tags"] == [{"name": "education"}]
    assert meta["toolIds"] == ["calculator"]
    assert meta["filterIds"] == meta["defaultFilterIds"] == ["pii_redactor"]
    assert meta["actionIds"] == ["add_to_memories"]
    assert meta["skillIds"] == ["code-review-checklist"]
    assert meta["tts"] == {"voice": "alloy"}
    assert meta["hidden"] is False
    assert "tool_ids" not in meta
    assert exported["access_grants"] == [
        {
            "resource_type": "model",
            "resource_id": "python-tutor",
            "principal_type": "user",
            "principal_id": "*",
            "permission": "read",
        },
        {
            "resource_type": "model",
            "resource_id": "python-tutor",
            "principal_type": "group",
            "principal_id": "a1b2...-group-uuid",
            "permission": "read",
        },
    ]
    assert exported["is_active"] is True
    json.dumps(exported, allow_nan=False)


def test_export_without_avatar_has_null_image_and_private_has_no_grants() -> None:
    model = stored(imported(minimal()))

    exported = to_openwebui(model, avatar_data_uri=None)

    assert exported["meta"]["profile_image_url"] is None
    assert exported["access_grants"] == []


def test_round_trip_spec_is_a_model_file_spec() -> None:
    # The service creates from the spec; make sure a stored model's spec part equals what was imported.
    first = imported(minimal(params={"temperature": 0.5}))
    spec = ModelFileSpec.model_validate(stored(first).model_dump())

    assert spec == first.spec


def test_export_filename_is_safe_and_readable() -> None:
    now = datetime(2026, 7, 1, 12, 0, 0, tzinfo=UTC)
    millis = int(now.timestamp() * 1000)

    assert export_filename("python-tutor", now) == f"python-tutor-{millis}.json"
    assert export_filename("hf.co/user/repo:Q4_K_M", now) == f"hf.co_user_repo_Q4_K_M-{millis}.json"
    assert export_filename('..\\evil"name', now) == f"_evil_name-{millis}.json"
    assert export_filename("…", now) == f"_-{millis}.json"
    assert len(export_filename("x" * 256, now)) < 255


def test_share_payload_points_at_open_webui_community() -> None:
    exported = {"id": "python-tutor"}

    assert share_payload(exported) == {"url": SHARE_URL, "model": exported}
    assert SHARE_URL == "https://openwebui.com/models/create"
