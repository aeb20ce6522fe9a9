"""Fixtures of the cluster fault suite: a three-node NATS JetStream cluster per test, and the shared kit."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelhub_devstack.nats import NatsCluster

# The suite runs with --import-mode=importlib: its helper module is imported from this directory.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    started = NatsCluster(tmp_path / "nats")
    try:
        started.start()
        yield started
    finally:
        started.stop()
