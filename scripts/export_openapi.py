"""Writes the OpenAPI document of each HTTP service to docs/openapi/<service>.json.

Usage: python scripts/export_openapi.py [--check]

The documents are built from the apps themselves (no server is started, nothing is connected). --check
exits 1, naming the service, when a committed document differs from what the code publishes, so that a
client generated from docs/openapi/ is never out of date. tests/test_openapi_docs.py runs the check.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "docs" / "openapi"

#: Placeholders: building an app reads its settings but connects to nothing.
_COMMON = {
    "nats_url": "nats://127.0.0.1:4222",
    "jwt_secret": "x" * 48,
    "database_url": "postgresql://modelhub@127.0.0.1:5432/modelhub",
    "s3_endpoint": "127.0.0.1:9000",
    "s3_access_key": "k",
    "s3_secret_key": "s",
}


def documents() -> dict[str, dict[str, Any]]:
    from modelhub_chat_gateway import bootstrap as gateway
    from modelhub_chat_gateway.settings import ChatGatewaySettings
    from modelhub_puller import bootstrap as puller
    from modelhub_puller.settings import PullerSettings
    from modelhub_rag import bootstrap as rag
    from modelhub_rag.settings import RagSettings
    from modelhub_registry import bootstrap as registry
    from modelhub_registry.settings import RegistrySettings

    urls = {"registry_url": "http://127.0.0.1:8081", "rag_url": "http://127.0.0.1:8083"}
    apps = {
        "registry": registry.build_app(RegistrySettings(**_COMMON)),  # type: ignore[arg-type]
        "puller": puller.build_app(PullerSettings(**_COMMON)),  # type: ignore[arg-type]
        "rag": rag.build_app(RagSettings(**_COMMON)),  # type: ignore[arg-type]
        "chat-gateway": gateway.build_app(ChatGatewaySettings(**_COMMON, **urls)),  # type: ignore[arg-type]
    }
    return {name: app.openapi() for name, app in apps.items()}


def _text(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail when docs/openapi/ differs from the code")
    args = parser.parse_args()
    drifted = []
    for name, document in documents().items():
        path = OUT_DIR / f"{name}.json"
        text = _text(document)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                drifted.append(name)
            continue
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")  # noqa: T201 - a script's output
    if drifted:
        print(  # noqa: T201
            f"docs/openapi/ is out of date for: {', '.join(drifted)}; run `.venv/bin/python scripts/export_openapi.py`"
            " and commit the result",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
