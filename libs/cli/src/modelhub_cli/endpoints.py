"""Where the stack is: ``.modelhub/endpoints.env`` written by ``make up``, overridden by the environment."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

DEFAULT_FILE = Path(".modelhub") / "endpoints.env"


class EndpointsError(Exception):
    """The endpoints file is missing or unreadable."""


def endpoints_file() -> Path:
    home = os.environ.get("MODELHUB_HOME")
    return Path(home) / "endpoints.env" if home else DEFAULT_FILE


def parse_env_file(text: str) -> dict[str, str]:
    """Reads ``export KEY=value`` / ``KEY=value`` lines as a POSIX shell would (quotes included)."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, rest = line.partition("=")
        if not sep:
            continue
        parts = shlex.split(rest, comments=True)
        values[key.strip()] = parts[0] if parts else ""
    return values


@dataclass(frozen=True)
class Endpoints:
    values: dict[str, str]
    source: Path | None

    def get(self, key: str) -> str | None:
        return self.values.get(key) or None


def load_endpoints(path: Path | None = None) -> Endpoints:
    """Values from the file, then the environment on top (so ``MODELHUB_TOKEN=... modelhub`` works)."""
    target = path or endpoints_file()
    values: dict[str, str] = {}
    source: Path | None = None
    if target.is_file():
        values = parse_env_file(target.read_text())
        source = target
    elif path is not None:
        raise EndpointsError(f"{target} does not exist; run `make up` first or pass the right --env-file")
    for key, value in os.environ.items():
        if key.startswith(("MODELHUB_", "NATS_URL", "DATABASE_URL")):
            values[key] = value
    return Endpoints(values, source)
