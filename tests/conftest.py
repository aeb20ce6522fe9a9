"""The cross-service tests run with --import-mode=importlib: their shared helper modules are imported from here."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fuzzed_services import served  # noqa: E402


@pytest.fixture
def fuzzed_service(
    nats_url: str, s3: Any, postgres_admin_url: str, jwt_secret: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[[str], AbstractContextManager[tuple[Any, str]]]:
    """``fuzzed_service(kind)``: :func:`fuzzed_services.served` for ``registry``, ``rag`` or ``puller``, with
    what that service needs besides the stack (the rag service's embedder, the puller's spool)."""

    def serve(kind: str) -> AbstractContextManager[tuple[Any, str]]:
        extra: dict[str, Any] = {}
        if kind == "rag":
            extra["embedder"] = request.getfixturevalue("onnx_embedder")
        if kind == "puller":
            extra["spool_dir"] = tmp_path / "spool"
        return served(kind, nats_url, s3, postgres_admin_url, jwt_secret, **extra)

    return serve
