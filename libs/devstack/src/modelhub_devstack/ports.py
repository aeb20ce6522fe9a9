"""Picking free TCP ports on the loopback interface."""

from __future__ import annotations

import random
import socket
from contextlib import ExitStack
from pathlib import Path

from modelhub_devstack.errors import DevstackError

LOOPBACK = "127.0.0.1"
_MAX_PORT = 65535
# Below this, ports are privileged or conventionally claimed by well-known services.
_LOWEST_PORT = 10000
_DEFAULT_EPHEMERAL_RANGE = (32768, 60999)
_ATTEMPTS = 500


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return _DEFAULT_EPHEMERAL_RANGE


def is_port_free(port: int, host: str = LOOPBACK) -> bool:
    """True if a server could bind ``host:port`` right now (nothing listens on it)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # Servers set SO_REUSEADDR, so connections of a killed predecessor lingering in TIME_WAIT
            # do not stop them binding; without it we would call the port busy for a minute.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError:
        return False
    return True


def _try_bind(stack: ExitStack, port: int, host: str) -> bool:
    # No SO_REUSEADDR when choosing: a port still in TIME_WAIT is someone's recent port, skip it.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        return False
    stack.callback(sock.close)
    return True


def pick_free_ports(count: int, *, host: str = LOOPBACK, companion_offset: int = 0) -> list[int]:
    """Return ``count`` distinct ports that are free on ``host``.

    With ``companion_offset`` (SeaweedFS opens a gRPC port at each port + 10000) every ``port + offset``
    is free too, below 65535, and distinct from all other returned ports.

    Ports come from below the kernel's ephemeral range: a port handed out by ``bind(0)`` is one the
    kernel may give to the next outgoing connection before our server binds it. All candidates stay
    bound until the whole set is chosen, so one call never returns the same port twice.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    ephemeral_low, _ = _ephemeral_range()
    highest = min(ephemeral_low, _MAX_PORT + 1) - 1 - companion_offset
    if highest < _LOWEST_PORT:
        # A tiny or unusual ephemeral range: fall back to anything that still fits below 65535.
        highest = _MAX_PORT - 1 - companion_offset
    if highest < _LOWEST_PORT:
        raise ValueError(f"companion_offset {companion_offset} leaves no usable port below {_MAX_PORT}")
    rng = random.SystemRandom()
    chosen: list[int] = []
    with ExitStack() as held:
        for _ in range(_ATTEMPTS):
            if len(chosen) == count:
                break
            port = rng.randint(_LOWEST_PORT, highest)
            if not _try_bind(held, port, host):
                continue
            if companion_offset and not _try_bind(held, port + companion_offset, host):
                continue
            chosen.append(port)
    if len(chosen) < count:
        raise DevstackError(
            f"could not find {count} free ports on {host} between {_LOWEST_PORT} and {highest} "
            f"after {_ATTEMPTS} attempts; stop some local servers and try again"
        )
    return chosen


def pick_free_port(*, host: str = LOOPBACK) -> int:
    """Return one free port on ``host``."""
    return pick_free_ports(1, host=host)[0]
