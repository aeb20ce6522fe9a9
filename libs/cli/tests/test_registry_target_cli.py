"""Where the CLI finds the registry and its token, and what it says when it cannot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from typer.testing import CliRunner, Result

from modelhub_cli.main import app
from modelhub_devstack.ports import pick_free_port

if TYPE_CHECKING:
    from conftest import LiveRegistry

SECRET_TOKEN = "not-a-real-token-but-secret"


def _run(args: list[str], env: dict[str, str | None]) -> Result:
    result = CliRunner().invoke(app, args, env={"COLUMNS": "250", **env})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def _no_endpoints(tmp_path: Path) -> dict[str, str | None]:
    return {"MODELHUB_HOME": str(tmp_path), "MODELHUB_REGISTRY_URL": None, "MODELHUB_TOKEN": None}


def test_a_missing_url_says_to_run_make_up_or_set_the_variable(tmp_path: Path) -> None:
    result = _run(["models", "list"], {**_no_endpoints(tmp_path), "MODELHUB_TOKEN": SECRET_TOKEN})
    assert result.exit_code == 1
    assert "no registry URL" in result.output
    assert "make up" in result.output and "MODELHUB_REGISTRY_URL" in result.output
    assert SECRET_TOKEN not in result.output


def test_a_missing_token_says_to_run_make_up_or_set_the_variable(tmp_path: Path) -> None:
    result = _run(["users", "list"], {**_no_endpoints(tmp_path), "MODELHUB_REGISTRY_URL": "http://127.0.0.1:1"})
    assert result.exit_code == 1
    assert "no token" in result.output and "make up" in result.output and "MODELHUB_TOKEN" in result.output


def test_the_endpoints_file_is_read_when_nothing_else_is_set(tmp_path: Path) -> None:
    (tmp_path / "endpoints.env").write_text(f"export MODELHUB_REGISTRY_URL=http://127.0.0.1:{pick_free_port()}\n")
    result = _run(["models", "list"], _no_endpoints(tmp_path))
    # The URL came from the file; the token did not, and that is what the user is told.
    assert result.exit_code == 1 and "no token" in result.output


def test_an_unreachable_registry_is_one_clear_line_not_a_traceback(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{pick_free_port()}"
    env = {**_no_endpoints(tmp_path), "MODELHUB_REGISTRY_URL": url, "MODELHUB_TOKEN": SECRET_TOKEN}
    result = _run(["models", "show", "anything"], env)
    assert result.exit_code == 1
    assert f"the registry at {url} is unreachable" in result.output and "make up" in result.output
    assert "Traceback" not in result.output and SECRET_TOKEN not in result.output


def test_help_works_without_any_configuration(tmp_path: Path) -> None:
    result = _run(["models", "create", "--help"], _no_endpoints(tmp_path))
    assert result.exit_code == 0 and "Example: modelhub models create" in result.output


def test_options_win_over_the_environment(live_registry: LiveRegistry) -> None:
    dead_url = f"http://127.0.0.1:{pick_free_port()}"
    live_registry.extra_env.update({"MODELHUB_REGISTRY_URL": dead_url, "MODELHUB_TOKEN": SECRET_TOKEN})
    assert live_registry.run("models", "list").exit_code == 1
    options = ["--registry-url", live_registry.url, "--token", live_registry.admin_token]
    assert json.loads(live_registry.ok("models", *options, "list", "--json")) == {"items": [], "next_cursor": None}


def test_a_rejected_token_explains_itself_without_printing_the_token(live_registry: LiveRegistry) -> None:
    output = live_registry.fails("models", "list", token=SECRET_TOKEN)
    assert "HTTP 401" in output and "MODELHUB_TOKEN" in output
    assert SECRET_TOKEN not in output
