"""``modelhub knowledge ...`` against a real rag service (uvicorn in a thread, real NATS, PostgreSQL, S3, ONNX)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from modelhub_cli.main import app

_CORRUPT_PDF = b"%PDF-1.4\n" + b"\x00garbage\xff" * 40


@dataclass
class LiveRag:
    url: str
    token: str
    home: Path

    def run(self, *args: str, token: str | None = None, url: str | None = None) -> Result:
        env = {
            "MODELHUB_RAG_URL": url if url is not None else self.url,
            "MODELHUB_TOKEN": token or self.token,
            "MODELHUB_HOME": str(self.home),
            "COLUMNS": "250",
        }
        result = CliRunner().invoke(app, ["knowledge", *args], env=env)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        return result

    def ok(self, *args: str, token: str | None = None) -> str:
        result = self.run(*args, token=token)
        assert result.exit_code == 0, result.output
        return result.output


@pytest.fixture
def live_rag(
    rag_service: str, make_token: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> LiveRag:
    monkeypatch.chdir(tmp_path)
    return LiveRag(rag_service, make_token("root", "admin"), tmp_path / "no-endpoints")


def _id(output: str) -> str:
    match = re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", output)
    assert match, output
    return match.group(0)


def test_create_add_query_and_remove(live_rag: LiveRag, tmp_path: Path) -> None:
    created = live_rag.run("create", "Field guide", "--description", "birds")
    assert created.exit_code == 0, created.output
    # stdout is the id alone, so `KB=$(modelhub knowledge create …)` works; the confirmation goes to stderr
    kid = created.stdout.strip()
    assert kid == _id(created.stdout), created.stdout
    assert "created knowledge 'Field guide'" in created.stderr
    assert "Field guide" in live_rag.ok("list")

    (tmp_path / "owls.txt").write_text("Barn owls hunt at night by hearing alone; their faces funnel sound.")
    (tmp_path / "wrens.md").write_text("# Wrens\n\nWrens are tiny birds with loud songs.")
    added = live_rag.ok("add", kid, str(tmp_path / "owls.txt"), str(tmp_path / "wrens.md"))
    assert "uploaded owls.txt (txt)" in added and "uploaded wrens.md (md)" in added
    assert "2 file(s) indexed" in added

    found = live_rag.ok("query", kid, "how do owls hunt", "-k", "1")
    assert "owls.txt" in found and "Barn owls" in found

    again = live_rag.ok("add", kid, str(tmp_path / "owls.txt"))
    assert "already in the collection, skipped" in again

    files = live_rag.ok("files", kid, "--json")
    owls = next(f for f in json.loads(files) if f["name"] == "owls.txt")
    assert "removed file" in live_rag.ok("rm", kid, "--file", owls["id"])
    assert "owls.txt" not in live_rag.ok("files", kid)

    assert f"deleted knowledge {kid}" in live_rag.ok("rm", kid)
    missing = live_rag.run("files", kid)
    assert missing.exit_code == 1 and "does not exist" in missing.output and "modelhub knowledge list" in missing.output


def test_add_reports_files_that_fail_to_index(live_rag: LiveRag, tmp_path: Path) -> None:
    kid = _id(live_rag.ok("create", "mixed"))
    (tmp_path / "good.txt").write_text("Puffins mate for life.")
    (tmp_path / "broken.pdf").write_bytes(_CORRUPT_PDF)
    (tmp_path / "picture.pdf").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)

    refused = live_rag.run("add", kid, str(tmp_path / "picture.pdf"))
    assert refused.exit_code == 1 and "PNG" in refused.output and "supported files" in refused.output

    result = live_rag.run("add", kid, str(tmp_path / "good.txt"), str(tmp_path / "broken.pdf"))
    assert result.exit_code == 1, result.output
    assert "1 of 2 file(s) failed to index" in result.output
    assert "corrupt" in result.output and "indexed" in result.output


def test_missing_configuration_and_other_users(live_rag: LiveRag, make_token: Callable[..., str]) -> None:
    no_url = live_rag.run("list", url="")
    assert no_url.exit_code == 1 and "no rag service URL" in no_url.output
    kid = _id(live_rag.ok("create", "private"))
    stranger = live_rag.run("files", kid, token=make_token("eve", "user"))
    # A collection someone else owns answers exactly like a missing one: no existence oracle.
    assert stranger.exit_code == 1 and "does not exist or you cannot read it" in stranger.output
    assert "knowledge list" in stranger.output
    unreachable = live_rag.run("list", url="http://127.0.0.1:1")
    assert unreachable.exit_code == 1 and "unreachable" in unreachable.output
