"""Schemathesis' own engine against the REST services and the gateway's OpenAI surface (``st run``), for the two
phases tests/test_fuzz_openapi.py does not run:

- coverage: boundary and negative values derived from each schema (one past a maximum, a missing required
  field, a wrong type, an unexpected method), every case the schema defines;
- stateful: sequences of calls joined by the ids the answers carry (create a model file, then read, change and
  delete it by its id), links inferred from the documents' paths and ``Location`` headers.

A fixed seed, deterministic generation, a bounded number of examples and steps. Every check runs; a server
error, an undocumented status, a body or header off its schema fails the test, with the failures in the
message. Operations whose acceptance of schema-valid input no schema can state are the same as in
tests/test_fuzz_openapi.py (:data:`NOT_CHECKED_FOR_ACCEPTANCE`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fuzzed_services import admin_headers, served, served_gateway
from test_fuzz_openapi import NOT_CHECKED_FOR_ACCEPTANCE

SEED = 20250101
#: Examples per operation for the stateful phase's steps (the coverage phase makes every case it derives).
EXAMPLES = 30
ST = Path(sys.executable).with_name("st")
HOOKS = Path(__file__).with_name("fuzz_hooks.py")
#: The base model the registry's model-file creates are built on in the stateful phase (see fuzz_hooks.py).
BASE_MODEL = "fuzz-base:1b"


#: Operations (a path regex) where ``unsupported_method`` is not checked, and why.
NOT_CHECKED_FOR_UNSUPPORTED_METHODS = {
    r"^/api/v1/models/\{model_id\}/.": "model ids may hold '/': PATCH /models/a/clone changes the model 'a/clone'",
}

#: Operations the stateful phase leaves out, and why.
NOT_IN_STATEFUL = {
    "GET /api/v1/pulls/{pull_id}/events": "follows a pull until it ends; with nothing to pull from here, a pull "
    "is retried for minutes and the stream stays open (404 and bad ids are fuzzed in the coverage phase)",
}


def _config(path: Path, operations: set[str]) -> Path:
    """Every check, but those the dicts above leave out, where they say. In a config file: a check chosen on
    the command line would override the operations' settings."""
    lines = ["[checks]", "enabled = true", ""]

    def section(selector: str, setting: str) -> None:
        lines.extend(["[[operations]]", selector, f"{setting}.enabled = false", ""])

    for name in sorted(operations & NOT_CHECKED_FOR_ACCEPTANCE.keys()):
        section(f'include-name = "{name}"', "checks.positive_data_acceptance")
    for regex in NOT_CHECKED_FOR_UNSUPPORTED_METHODS:
        if any(re.search(regex, name.split(" ", 1)[1]) for name in operations):
            section(f"include-path-regex = '{regex}'", "checks.unsupported_method")
    for name in sorted(operations & NOT_IN_STATEFUL.keys()):
        section(f'include-name = "{name}"', "phases.stateful")
    path.write_text("\n".join(lines))
    return path


def _operations(schema: Any) -> set[str]:
    return {f"{method.upper()} {path}" for path, item in schema.raw_schema["paths"].items() for method in item}


def run_schemathesis(schema: Any, url: str, headers: dict[str, str], workdir: Path) -> dict[str, Any]:
    """``st run`` against ``url``; fails with schemathesis' own account of each failure (the request, the
    answer and a curl line to reproduce it), or returns its JSON report."""
    report = workdir / "report.json"
    command = [
        str(ST),
        "--config-file",
        str(_config(workdir / "schemathesis.toml", _operations(schema))),
        "run",
        f"{url}/openapi.json",
        "--phases=coverage,stateful",
        # Deterministic generation makes the run the same every time; the seed fixes what is left random.
        f"--seed={SEED}",
        "--generation-deterministic",
        f"--max-examples={EXAMPLES}",
        "--generation-allow-x00=false",
        "--workers=1",
        "--request-timeout=30",
        "--no-color",
        "--report=json",
        f"--report-json-path={report}",
        *[arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")],
    ]
    log = workdir / "st.log"
    with log.open("w") as out:
        env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS), "MODELHUB_FUZZ_BASE_MODEL": BASE_MODEL}
        code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT, timeout=600, cwd=workdir, env=env)
    output = log.read_text()
    assert code == 0 and report.exists(), output[output.find("FAILURES") :] if "FAILURES" in output else output
    data: dict[str, Any] = json.loads(report.read_text())
    assert not data["failures"] and not data["errors"], output
    assert data["operations"]["tested"] == data["operations"]["selected"], data["operations"]
    stateful = next((line.strip() for line in output.splitlines() if "API Links:" in line), "no links")
    print(f"{url}: {data['test_cases']['generated']} cases, stateful {stateful}")  # noqa: T201 - shown with -s
    return data


@pytest.mark.parametrize("kind", ["registry", "rag", "puller"])
def test_coverage_and_stateful_phases_find_nothing(
    kind: str, fuzzed_service: Any, jwt_secret: str, tmp_path: Path
) -> None:
    headers = admin_headers(jwt_secret)
    with fuzzed_service(kind) as (schema, url):
        if kind == "registry":
            seeded = httpx.post(f"{url}/api/v1/base-models", json={"id": BASE_MODEL}, headers=headers)
            assert seeded.status_code == 201, seeded.text
        report = run_schemathesis(schema, url, headers, tmp_path)
    assert report["test_cases"]["generated"] > 100
    assert report["phases"]["coverage"]["status"] == "success"
    assert report["phases"]["stateful"]["status"] == "success"


def test_the_gateways_openai_surface_passes_coverage_and_stateful_phases(
    nats_url: str, s3: Any, postgres_admin_url: str, jwt_secret: str, tmp_path: Path
) -> None:
    with served("registry", nats_url, s3, postgres_admin_url, jwt_secret) as (_, registry_url):
        with served_gateway(nats_url, s3, postgres_admin_url, registry_url, jwt_secret) as (schema, url):
            report = run_schemathesis(schema, url, admin_headers(jwt_secret), tmp_path)
    assert "POST /v1/chat/completions" in _operations(schema)
    assert report["test_cases"]["generated"] > 20
    # Nothing the gateway's surface creates is read back by another of its routes: no scenario to run.
    assert report["phases"]["coverage"]["status"] == "success"
