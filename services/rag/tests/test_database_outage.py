"""PostgreSQL down: every request that needs it, retrieval included, is answered 503 with ``Retry-After`` in the
shared error shape after at most ``MODELHUB_RAG_DATABASE_POOL_TIMEOUT_SECONDS`` of waiting for a connection
(on both pools, the main one and the search pool), and the same app serves again once it is back."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modelhub_devstack.postgres import PostgresServer

POOL_TIMEOUT = 1.0
#: Requests of each kind sent while PostgreSQL is down: the first ones may meet a pooled connection that died
#: with the server (an OperationalError, also a 503), the later ones wait for a new connection (PoolTimeout).
TRIES = 4


@pytest.fixture
def own_postgres(modelhub_devstack_dir: Path) -> Iterator[PostgresServer]:
    """A PostgreSQL of this test's own, since it is stopped and started again (the session's is shared); under
    the session's server directory, which its system user can enter."""
    with PostgresServer(modelhub_devstack_dir / f"pg-{uuid.uuid4().hex[:8]}", durable=False) as server:
        yield server


def _is_unavailable(response: Any) -> bool:
    body = response.json()
    return (
        response.status_code == 503
        and response.headers.get("retry-after", "").isdigit()
        and set(body) == {"error"}
        and body["error"]["code"] == "dependency_unavailable"
        and "database" in body["error"]["message"]
    )


def test_postgres_down_is_a_503_with_retry_after_after_the_pool_timeout_and_recovers(
    own_postgres: PostgresServer,
    rag_settings: Callable[..., Any],
    make_rag: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    own_postgres.create_database("rag")
    settings = rag_settings(database_url=own_postgres.url("rag"), database_pool_timeout_seconds=POOL_TIMEOUT)
    rag = make_rag(settings)
    state = rag.client.app.state
    # Both pools wait the setting, not psycopg's default of 30 s.
    assert state.runtime.pool.timeout == POOL_TIMEOUT
    assert state.services.retrieval.pool.timeout == POOL_TIMEOUT

    kb = rag.create(name="outage")
    rag.upload(kb["id"], "tides.txt", b"Spring tides happen at new and full moon, when the sun and moon align.")
    assert {f["status"] for f in rag.wait_files(kb["id"], count=1)} == {"indexed"}
    assert rag.query(kb["id"], "when are spring tides")  # the search pool has a connection open

    requests: dict[str, Callable[[], Any]] = {
        "query (search pool)": lambda: rag.client.post(
            f"/api/v1/knowledge/{kb['id']}/query", json={"query": "spring tides"}, headers=rag.admin
        ),
        "retrieve (search pool)": lambda: rag.client.post(
            "/api/v1/retrieve", json={"knowledge_ids": [kb["id"]], "query": "spring tides"}, headers=rag.admin
        ),
        "list collections (main pool)": lambda: rag.client.get("/api/v1/knowledge", headers=rag.admin),
    }
    own_postgres.stop()
    caplog.set_level(logging.WARNING, logger="modelhub_common.webapp")
    seconds: dict[str, list[float]] = {}
    for name, send in requests.items():
        for _ in range(TRIES):
            began = time.perf_counter()
            response = send()
            seconds.setdefault(name, []).append(time.perf_counter() - began)
            assert _is_unavailable(response), (name, response.status_code, response.headers, response.text)
    assert rag.client.get("/readyz").status_code == 503
    # What each request waited, next to the setting (figures only: timing is not asserted).
    print(  # noqa: T201
        f"503s with PostgreSQL down, pool timeout {POOL_TIMEOUT} s: "
        + "; ".join(f"{name} {', '.join(f'{s:.2f}' for s in values)} s" for name, values in seconds.items())
    )
    # The later requests of each kind waited for a connection until the pool gave up: the timeout answered them.
    gave_up = [r for r in caplog.records if getattr(r, "error", None) == "PoolTimeout"]
    assert len(gave_up) >= len(requests), [(r.getMessage(), getattr(r, "error", None)) for r in caplog.records]

    own_postgres.start()
    # Each pool reconnects on its own backoff, which grew with the failures it met while the server was down.
    deadline = time.monotonic() + 60

    def recovered(name: str) -> Any:
        while (response := requests[name]()).status_code != 200:
            assert _is_unavailable(response), response.text
            assert time.monotonic() < deadline, f"{name} did not recover"
            time.sleep(0.2)
        return response

    assert recovered("query (search pool)").json()["results"][0]["file_name"] == "tides.txt"
    assert recovered("list collections (main pool)").status_code == 200
