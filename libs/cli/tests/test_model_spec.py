"""Request bodies from flags and files, and error bodies into ApiError (no server needed)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from modelhub_cli.client import attachment_filename, error_from_response, model_path
from modelhub_cli.errors import CliError
from modelhub_cli.model_spec import ModelFlags, create_body, edit_patch
from modelhub_cli.transfer_cmd import local_name


def test_flags_become_the_nested_api_shape() -> None:
    flags = ModelFlags(id="m", base="b", temperature=0.0, tags=("x", "y"), vision=False, description="d")
    assert create_body(flags, None) == {
        "id": "m",
        "base_model_id": "b",
        "name": "m",
        "params": {"temperature": 0.0},
        "meta": {"description": "d", "tags": ["x", "y"], "capabilities": {"vision": False}},
    }


def test_flags_win_over_the_file_key_by_key(tmp_path: Path) -> None:
    spec = tmp_path / "m.json"
    spec.write_text(json.dumps([{"id": "m", "name": "M", "params": {"system": "s", "temperature": 1}}]))
    body = create_body(ModelFlags(temperature=0.5), spec)
    assert body == {"id": "m", "name": "M", "params": {"system": "s", "temperature": 0.5}}


def test_files_that_cannot_be_one_model_are_refused(tmp_path: Path) -> None:
    several = tmp_path / "many.json"
    several.write_text(json.dumps([{"id": "a"}, {"id": "b"}]))
    with pytest.raises(CliError, match="holds 2 models"):
        create_body(ModelFlags(), several)
    broken = tmp_path / "broken.yaml"
    broken.write_text("id: [unclosed\n")
    with pytest.raises(CliError, match="not valid YAML"):
        create_body(ModelFlags(), broken)
    with pytest.raises(CliError, match="cannot read"):
        create_body(ModelFlags(), tmp_path / "absent.json")
    with pytest.raises(CliError, match="needs an id"):
        create_body(ModelFlags(name="x"), None)


def test_an_empty_edit_is_refused() -> None:
    with pytest.raises(CliError, match="nothing to change"):
        edit_patch(ModelFlags(), None)


def _response(status: int, **kwargs: object) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("GET", "http://r/api/v1/users/x"), **kwargs)  # type: ignore[arg-type]


def test_error_bodies_become_one_api_error() -> None:
    body = {"error": {"code": "not_found", "message": "user 'x' does not exist", "details": None}}
    error = error_from_response(_response(404, json=body))
    assert (error.message, error.status, error.code) == ("user 'x' does not exist", 404, "not_found")
    assert error.hint is not None and "modelhub users list" in error.hint

    foreign = error_from_response(_response(502, text="<html>Bad Gateway</html>"))
    assert foreign.status == 502 and "Bad Gateway" in foreign.message


def test_download_names_are_reduced_to_a_plain_file_name() -> None:
    response = _response(200, headers={"Content-Disposition": 'attachment; filename="../../etc/m-1.json"'})
    assert attachment_filename(response) == "../../etc/m-1.json"
    assert local_name(attachment_filename(response), "fallback.json") == Path("m-1.json")
    assert local_name(".hidden", "fallback.json") == Path("fallback.json")
    assert local_name(None, "fallback.json") == Path("fallback.json")


def test_model_ids_stay_one_path_parameter() -> None:
    assert model_path("hf.co/user/repo:Q4_K_M", "/export") == "/api/v1/models/hf.co/user/repo:Q4_K_M/export"
    assert model_path("what?#%") == "/api/v1/models/what%3F%23%25"
    # Dot segments would otherwise be resolved away by httpx and reach another route.
    assert model_path("../users") == "/api/v1/models/%2E%2E/users"
    assert httpx.URL("http://r" + model_path("../users")).raw_path == b"/api/v1/models/%2E%2E/users"
