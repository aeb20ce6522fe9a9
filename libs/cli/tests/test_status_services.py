"""``modelhub status`` checks the web console only where its URL is configured."""

from __future__ import annotations

from modelhub_cli.endpoints import Endpoints
from modelhub_cli.status import check_all


def test_the_console_is_checked_only_when_configured() -> None:
    # Port 9 (discard) on loopback: nothing answers, so each configured service reports "unreachable".
    base = {
        "MODELHUB_REGISTRY_URL": "http://127.0.0.1:9",
        "MODELHUB_PULLER_URL": "http://127.0.0.1:9",
        "MODELHUB_RAG_URL": "http://127.0.0.1:9",
        "MODELHUB_GATEWAY_HTTP": "http://127.0.0.1:9",
    }
    without = [h.name for h in check_all(Endpoints(dict(base), None))]
    assert without == ["registry", "puller", "rag", "chat-gateway"]
    with_console = check_all(Endpoints({**base, "MODELHUB_CONSOLE_URL": "http://127.0.0.1:9"}, None))
    assert [h.name for h in with_console][-1] == "console" and not with_console[-1].ready
