"""docs/openapi/ holds the OpenAPI document each HTTP service publishes; this fails when one drifts from the code
(regenerate with ``.venv/bin/python scripts/export_openapi.py``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_committed_openapi_documents_match_the_code() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "export_openapi.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
