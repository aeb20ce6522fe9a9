"""Real local servers for the dev stack and for tests: NATS+JetStream, PostgreSQL+pgvector, S3, OCI registry.

Nothing here starts at import time. Tests get servers from the pytest fixtures in
:mod:`modelhub_devstack.pytest_plugin`; developers get the whole stack from ``modelhub-dev up``.
"""

from modelhub_devstack.endpoints import S3Endpoint
from modelhub_devstack.errors import DevstackError
from modelhub_devstack.nats import NatsServer
from modelhub_devstack.oci_registry import OciRegistry
from modelhub_devstack.ports import is_port_free, pick_free_port, pick_free_ports
from modelhub_devstack.postgres import PostgresServer
from modelhub_devstack.seaweed import SeaweedPorts, SeaweedS3
from modelhub_devstack.server import ManagedServer

__all__ = [
    "DevstackError",
    "ManagedServer",
    "NatsServer",
    "OciRegistry",
    "PostgresServer",
    "S3Endpoint",
    "SeaweedPorts",
    "SeaweedS3",
    "is_port_free",
    "pick_free_port",
    "pick_free_ports",
]
