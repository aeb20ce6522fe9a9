"""Fuzzing the REST services against their own OpenAPI documents with schemathesis: every operation of the
registry, the rag service, the puller and the gateway's OpenAI-compatible surface gets generated requests
(valid and invalid, a fixed seed and a bounded number of examples so the run fits the test budget), sent over
real HTTP to a real service on the real stack with an admin token.

Every answer goes through all of schemathesis' checks: no server error (5xx) or reset connection, every
status documented, every body in its documented schema and content type, documented headers present,
schema-invalid requests refused, schema-valid requests accepted, ``405`` with ``Allow``. Generated strings
hold no NUL character: every service refuses NUL in any text with a 422 naming the field, which the schemas
do not spell out on each string (tests/test_bad_input_burst.py and the boundary tests send NUL on purpose).

"A schema-valid request is accepted" is left out for the operations in
:data:`NOT_CHECKED_FOR_ACCEPTANCE`: what they accept depends on more than a schema can say (a base model or
URL that must exist or be allowed, opaque cursors, per-kind configurations, file contents), so a generated "valid"
body is refused there with a 422 naming the field.
"""

from __future__ import annotations

from typing import Any

import pytest
from fuzzed_services import admin_headers, served, served_gateway
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

#: Examples per operation: enough to reach every validator of a route, few enough for CI.
EXAMPLES = 20
#: Operations whose acceptance of schema-valid input is not checked, and why.
NOT_CHECKED_FOR_ACCEPTANCE = {
    "POST /api/v1/models": "the base model must exist and be readable",
    "POST /api/v1/models/import": "a multipart file of Open WebUI model files, validated item by item",
    "POST /api/v1/knowledge/{knowledge_id}/files": "the content must be a document of a kind the service reads "
    "(text, HTML, PDF, DOCX...), not empty: it decides the type, not a schema",
    "PUT /api/v1/models/{model_id}/avatar": "the file must be an image of a kind the service reads (PNG, JPEG, "
    "WebP, GIF) within the pixel limit: its content decides, not a schema",
    "POST /api/v1/connections": "the URL must pass the outbound URL policy",
    "POST /api/v1/tool-servers": "the URL must pass the URL policy and answer discovery",
    "PATCH /api/v1/tool-servers/{server_id}": "a merge patch of the changeable fields only",
    "POST /api/v1/filters": "each filter kind has its own configuration",
    "PATCH /api/v1/filters/{filter_id}": "a merge patch of the changeable fields only",
    "GET /api/v1/models": "cursors are opaque: only one this API gave out is valid",
    "GET /api/v1/audit": "cursors are opaque: only one this API gave out is valid",
    "POST /v1/chat/completions": "OpenAI's message, tool and response-format shapes are checked by the route",
}


def fuzz(
    schema: Any, headers: dict[str, str], examples: int = EXAMPLES, *, strict: bool = True
) -> tuple[int, list[str]]:
    """Every operation of ``schema`` with up to ``examples`` generated cases; returns (requests sent,
    problems). ``strict``: every check (see :data:`NOT_CHECKED_FOR_ACCEPTANCE`); otherwise only server errors."""
    problems: list[str] = []
    sent = 0
    schema.config.generation.update(allow_x00=False)
    for result in schema.get_all_operations():
        operation = result.ok()
        excluded = (
            [positive_data_acceptance]
            if f"{operation.method.upper()} {operation.path}" in NOT_CHECKED_FOR_ACCEPTANCE
            else []
        )

        @given(case=operation.as_strategy())
        @settings(
            max_examples=examples,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            nonlocal sent
            sent += 1
            where = f"{case.method} {case.formatted_path}"
            try:
                response = case.call(headers=headers, timeout=30)
            except Exception as exc:  # a reset or closed connection is as bad as a 500
                problems.append(f"{where}: no answer ({type(exc).__name__})")
                return
            if response.status_code >= 500:
                problems.append(f"{where}: {response.status_code} {response.text[:200]}")
            elif strict:
                try:
                    # run() is called once, right below, while ``excluded`` is this operation's.
                    case.validate_response(response, excluded_checks=excluded)  # noqa: B023
                except BaseException as exc:  # schemathesis raises a group of check failures
                    for failure in getattr(exc, "exceptions", [exc]):
                        title = str(failure).strip().splitlines()[0]
                        problems.append(f"{where}: {response.status_code} {title}: {response.text[:200]}")

        run()
    return sent, problems


@pytest.mark.parametrize("kind", ["registry", "rag", "puller"])
def test_no_request_gets_a_server_error(kind: str, fuzzed_service: Any, jwt_secret: str) -> None:
    with fuzzed_service(kind) as (schema, _):
        sent, problems = fuzz(schema, admin_headers(jwt_secret))
    print(f"{kind}: {sent} requests, {len(problems)} problems")  # noqa: T201 - shown with -s
    assert sent > 50
    assert not problems, "\n".join(dict.fromkeys(problems))


def test_the_gateways_openai_surface_never_answers_a_server_error(
    nats_url: str, s3: Any, postgres_admin_url: str, jwt_secret: str
) -> None:
    with served("registry", nats_url, s3, postgres_admin_url, jwt_secret) as (_, registry_url):
        with served_gateway(nats_url, s3, postgres_admin_url, registry_url, jwt_secret) as (schema, _):
            paths = sorted(schema.raw_schema["paths"])
            sent, problems = fuzz(schema, admin_headers(jwt_secret), examples=60)
    assert "/v1/chat/completions" in paths, paths
    print(f"gateway: {sent} requests, {len(problems)} problems")  # noqa: T201 - shown with -s
    assert sent > 20
    assert not problems, "\n".join(dict.fromkeys(problems))
