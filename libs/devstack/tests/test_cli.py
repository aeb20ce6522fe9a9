"""The CLI explains itself and fails with clear messages when there is no stack yet."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelhub_devstack.cli import app

COMMANDS = ("up", "down", "clean", "status", "logs", "env")


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("MODELHUB_HOME", str(tmp_path / "state"))
    return CliRunner()


def test_help_lists_every_command(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(runner: CliRunner, command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_env_before_up_says_what_to_do(runner: CliRunner) -> None:
    result = runner.invoke(app, ["env"])
    assert result.exit_code == 1
    assert "modelhub-dev up" in result.output


def test_down_and_clean_without_a_stack_are_harmless(runner: CliRunner, tmp_path: Path) -> None:
    assert "Nothing to stop" in runner.invoke(app, ["down"]).output
    assert not (tmp_path / "state" / "stack.json").exists()
    assert "Nothing to clean" in runner.invoke(app, ["clean", "--yes"]).output


def test_logs_lists_components_and_rejects_unknown_names(runner: CliRunner) -> None:
    table = runner.invoke(app, ["logs"])
    assert table.exit_code == 0
    for component in ("nats", "postgres", "s3", "registry", "chat_gateway"):
        assert component in table.output
    unknown = runner.invoke(app, ["logs", "nope"])
    assert unknown.exit_code == 1
    assert "known: nats" in unknown.output
    not_yet = runner.invoke(app, ["logs", "registry"])
    assert not_yet.exit_code == 1
    assert "has not logged anything yet" in not_yet.output


def test_logs_tail_prints_the_last_lines(runner: CliRunner, tmp_path: Path) -> None:
    log = tmp_path / "state" / "logs" / "registry.log"
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"line {n}\n" for n in range(100)))
    result = runner.invoke(app, ["logs", "registry", "--tail", "3"])
    assert result.exit_code == 0
    assert result.output.splitlines() == ["line 97", "line 98", "line 99"]
