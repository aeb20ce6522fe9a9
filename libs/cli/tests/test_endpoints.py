from pathlib import Path

import pytest

from modelhub_cli.endpoints import EndpointsError, load_endpoints, parse_env_file


def test_parses_exported_and_quoted_values() -> None:
    text = "# comment\nexport A='x y'\nB=plain\nexport C=\"q'uote\"\n\nnot a pair\n"
    assert parse_env_file(text) == {"A": "x y", "B": "plain", "C": "q'uote"}


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = tmp_path / "endpoints.env"
    env.write_text("export MODELHUB_REGISTRY_URL=http://127.0.0.1:1\nexport MODELHUB_RAG_URL=http://r\n")
    monkeypatch.setenv("MODELHUB_REGISTRY_URL", "http://override")
    endpoints = load_endpoints(env)
    assert endpoints.get("MODELHUB_REGISTRY_URL") == "http://override"
    assert endpoints.get("MODELHUB_RAG_URL") == "http://r"


def test_a_named_file_that_is_missing_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(EndpointsError, match="make up"):
        load_endpoints(tmp_path / "nope.env")
