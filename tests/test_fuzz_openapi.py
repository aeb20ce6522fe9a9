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
URL that must exist or be allowed, opaque cursors, ids with per-kind configurations), so a generated "valid"
body is refused there with a 422 naming the field.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from modelhub_common.auth import issue_token
from modelhub_devstack.asgi import serve_in_thread
from modelhub_devstack.databases import create_database, database_url, drop_database
from modelhub_devstack.ports import pick_free_port

#: Examples per operation: enough to reach every validator of a route, few enough for CI.
EXAMPLES = 20
#: Operations whose acceptance of schema-valid input is not checked, and why.
NOT_CHECKED_FOR_ACCEPTANCE = {
    "POST /api/v1/models": "the base model must exist and be readable",
    "POST /api/v1/models/import": "a multipart file of Open WebUI model files, validated item by item",
    "POST /api/v1/base-models": "ids are any printable text without whitespace (no JSON-schema pattern for it)",
    "POST /api/v1/connections": "the URL must pass the outbound URL policy",
    "POST /api/v1/tool-servers": "the URL must pass the URL policy and answer discovery",
    "PATCH /api/v1/tool-servers/{server_id}": "a merge patch of the changeable fields only",
    "POST /api/v1/filters": "each filter kind has its own configuration",
    "PATCH /api/v1/filters/{filter_id}": "a merge patch of the changeable fields only",
    "GET /api/v1/models": "cursors are opaque: only one this API gave out is valid",
    "GET /api/v1/audit": "cursors are opaque: only one this API gave out is valid",
    "POST /v1/chat/completions": "OpenAI's message, tool and response-format shapes are checked by the route",
}


def _admin(jwt_secret: str) -> dict[str, str]:
    token = issue_token(jwt_secret, subject="fuzz-admin", role="admin", ttl_seconds=3600)
    return {"Authorization": f"Bearer {token}"}


def _values(nats_url: str, s3: Any, db_url: str, jwt_secret: str) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": pick_free_port(),
        "nats_url": nats_url,
        "jwt_secret": jwt_secret,
        "database_url": db_url,
        "s3_endpoint": s3.endpoint,
        "s3_access_key": s3.access_key,
        "s3_secret_key": s3.secret_key,
        "s3_secure": s3.secure,
        "shutdown_grace_seconds": 2,
    }


def _wait_ready(url: str, seconds: float = 30.0) -> None:
    """Fuzzing a gateway whose catalog has not loaded yet would only meet its 503s."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/readyz").status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError(f"{url} never became ready: {httpx.get(f'{url}/readyz').text}")


@contextlib.contextmanager
def _gateway(nats_url: str, s3: Any, postgres_admin_url: str, registry_url: str, jwt_secret: str) -> Iterator[Any]:
    """The chat gateway's HTTP surface (its OpenAI-compatible API), with a real registry behind it."""
    from modelhub_chat_gateway import bootstrap as gateway_bootstrap
    from modelhub_chat_gateway.settings import ChatGatewaySettings

    name = f"fuzz_gateway_{uuid.uuid4().hex[:10]}"
    create_database(postgres_admin_url, name, ("vector",))
    try:
        values = _values(nats_url, s3, database_url(postgres_admin_url, name), jwt_secret)
        settings = ChatGatewaySettings(
            **values, grpc_port=pick_free_port(), registry_url=registry_url, rag_url="http://127.0.0.1:9"
        )
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, gateway_bootstrap.run_migrations(settings)).result()
        app = gateway_bootstrap.build_app(settings)
        with serve_in_thread(app, name="fuzzed-gateway", port=settings.port, start_timeout=120) as url:
            _wait_ready(url)
            yield schemathesis.openapi.from_url(f"{url}/openapi.json")
    finally:
        drop_database(postgres_admin_url, name)


@contextlib.contextmanager
def _served(kind: str, nats_url: str, s3: Any, postgres_admin_url: str, jwt_secret: str, **extra: Any) -> Iterator[Any]:
    """One service (``registry``, ``rag``, ``puller``) on a database of its own; yields its OpenAPI schema and
    its base URL."""
    name = f"fuzz_{kind}_{uuid.uuid4().hex[:10]}"
    create_database(postgres_admin_url, name, ("vector",))
    try:
        values = _values(nats_url, s3, database_url(postgres_admin_url, name), jwt_secret)
        embedder = extra.pop("embedder", None)
        if kind == "registry":
            from modelhub_registry import bootstrap as registry_bootstrap
            from modelhub_registry.settings import RegistrySettings

            settings: Any = RegistrySettings(**values, connection_sync_seconds=0, **extra)
            migrate, build = registry_bootstrap.run_migrations, registry_bootstrap.build_app
        elif kind == "rag":
            from modelhub_rag import bootstrap as rag_bootstrap
            from modelhub_rag.settings import RagSettings

            settings = RagSettings(**values, consume_model_events=False, **extra)
            migrate = rag_bootstrap.run_migrations

            def build(settings: Any) -> Any:
                return rag_bootstrap.build_app(settings, embedder=embedder)
        else:
            from modelhub_puller import bootstrap as puller_bootstrap
            from modelhub_puller.settings import PullerSettings

            settings = PullerSettings(**values, **extra)
            migrate, build = puller_bootstrap.run_migrations, puller_bootstrap.build_app
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, migrate(settings)).result()
        with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
            # Every test shares one NATS: keep this database's outbox message ids apart from other tests'.
            conn.execute("SELECT setval('outbox_id_seq', %s)", (random.randrange(10**9, 10**15),))
        with serve_in_thread(build(settings), name=f"fuzzed-{kind}", port=settings.port, start_timeout=120) as url:
            yield schemathesis.openapi.from_url(f"{url}/openapi.json"), url
    finally:
        drop_database(postgres_admin_url, name)


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
def test_no_request_gets_a_server_error(
    kind: str,
    nats_url: str,
    s3: Any,
    postgres_admin_url: str,
    jwt_secret: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    extra: dict[str, Any] = {}
    if kind == "rag":
        extra["embedder"] = request.getfixturevalue("onnx_embedder")
    if kind == "puller":
        extra["spool_dir"] = tmp_path / "spool"
    with _served(kind, nats_url, s3, postgres_admin_url, jwt_secret, **extra) as (schema, _):
        sent, problems = fuzz(schema, _admin(jwt_secret))
    print(f"{kind}: {sent} requests, {len(problems)} problems")  # noqa: T201 - shown with -s
    assert sent > 50
    assert not problems, "\n".join(dict.fromkeys(problems))


def test_the_gateways_openai_surface_never_answers_a_server_error(
    nats_url: str, s3: Any, postgres_admin_url: str, jwt_secret: str
) -> None:
    with _served("registry", nats_url, s3, postgres_admin_url, jwt_secret) as (_, registry_url):
        with _gateway(nats_url, s3, postgres_admin_url, registry_url, jwt_secret) as schema:
            paths = sorted(schema.raw_schema["paths"])
            sent, problems = fuzz(schema, _admin(jwt_secret), examples=60)
    assert "/v1/chat/completions" in paths, paths
    print(f"gateway: {sent} requests, {len(problems)} problems")  # noqa: T201 - shown with -s
    assert sent > 20
    assert not problems, "\n".join(dict.fromkeys(problems))
