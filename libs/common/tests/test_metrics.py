"""The HTTP metrics middleware and /metrics: route templates as labels, bounded series, scrape-time gauges."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from modelhub_common.errors import DependencyError
from modelhub_common.health import Readiness
from modelhub_common.metrics import UNMATCHED_ROUTE, ServiceMetrics, status_class
from modelhub_common.webapp import create_app


def _app() -> TestClient:
    app = create_app(title="modelhub demo", version="0", readiness=Readiness(started=True))

    @app.get("/api/v1/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        if thing_id == "down":
            raise DependencyError("cannot reach PostgreSQL")
        return {"id": thing_id}

    return TestClient(app)


def _samples(client: TestClient, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_requests_are_counted_by_route_template_method_and_status_class() -> None:
    client = _app()
    for n in range(50):
        assert client.get(f"/api/v1/things/{n}").status_code == 200
    assert client.get("/api/v1/things/down").status_code == 503
    counts = _samples(client, "modelhub_http_requests_total")
    route = "/api/v1/things/{thing_id}"
    key = (("method", "GET"), ("route", route), ("service", "demo"), ("status", "2xx"))
    assert counts[key] == 50
    assert counts[(("method", "GET"), ("route", route), ("service", "demo"), ("status", "5xx"))] == 1
    durations = _samples(client, "modelhub_http_request_duration_seconds_count")
    assert durations[(("method", "GET"), ("route", route), ("service", "demo"))] == 51


def test_unknown_paths_and_methods_share_one_series() -> None:
    client = _app()
    for n in range(1000):
        assert client.get(f"/no/such/{n}").status_code == 404
    client.request("BREW", "/api/v1/things/1")
    counts = _samples(client, "modelhub_http_requests_total")
    unmatched = {k: v for k, v in counts.items() if dict(k)["route"] == UNMATCHED_ROUTE}
    assert unmatched == {(("method", "GET"), ("route", UNMATCHED_ROUTE), ("service", "demo"), ("status", "4xx")): 1000}
    assert all(dict(k)["method"] in {"GET", "other"} for k in counts)
    assert len(counts) < 10, counts


def test_each_app_has_its_own_registry() -> None:
    first, second = _app(), _app()
    first.get("/api/v1/things/1")
    assert _samples(second, "modelhub_http_requests_total") != _samples(first, "modelhub_http_requests_total")
    assert not any(dict(k)["route"].startswith("/api") for k in _samples(second, "modelhub_http_requests_total"))


async def test_scrape_callbacks_run_before_rendering_and_a_failing_one_does_not_fail_the_scrape() -> None:
    metrics = ServiceMetrics("demo", process_metrics=False, scrape_timeout=0.5)
    calls = []

    async def read() -> None:
        calls.append(1)
        metrics.outbox_pending.labels("demo").set(7)

    async def broken() -> None:
        raise ConnectionError("database down")

    metrics.on_scrape("outbox", read)
    metrics.on_scrape("broken", broken)
    text = (await metrics.render()).decode()
    assert calls == [1]
    assert 'modelhub_outbox_pending_rows{service="demo"} 7.0' in text


def test_status_classes() -> None:
    assert [status_class(s) for s in (200, 204, 301, 404, 503, 42)] == ["2xx", "2xx", "3xx", "4xx", "5xx", "other"]
