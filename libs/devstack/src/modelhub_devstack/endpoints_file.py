"""``endpoints.env``: the stack's URLs and an admin token, as a file a POSIX shell can ``source``."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path

from modelhub_devstack.state import write_private_file

_HEADER = (
    "# Written by `modelhub-dev up`. Load it into a shell with:  . {path}\n"
    "# It holds credentials and an admin token: keep it private (mode 600), do not commit or paste it.\n"
)


def render_endpoints_env(values: Mapping[str, str], *, path: Path) -> str:
    lines = [_HEADER.format(path=path)]
    lines += [f"export {name}={shlex.quote(value)}\n" for name, value in values.items()]
    return "".join(lines)


def write_endpoints_env(path: Path, values: Mapping[str, str]) -> None:
    """Write ``values`` as ``export NAME='value'`` lines, readable by the owner only."""
    write_private_file(path, render_endpoints_env(values, path=path))


def read_endpoints_env(path: Path) -> dict[str, str]:
    """Parse a file written by :func:`write_endpoints_env` (for tests and tools, not arbitrary shell)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.startswith("export "):
            continue
        [assignment] = shlex.split(line.removeprefix("export "))
        name, _, value = assignment.partition("=")
        values[name] = value
    return values
