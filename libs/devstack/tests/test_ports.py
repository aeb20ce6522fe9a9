from __future__ import annotations

import socket

from modelhub_devstack import is_port_free, pick_free_ports
from modelhub_devstack.seaweed import GRPC_PORT_OFFSET, SeaweedPorts


def test_picked_ports_are_distinct_and_free() -> None:
    ports = pick_free_ports(8)
    assert len(set(ports)) == 8
    assert all(is_port_free(port) for port in ports)


def test_companion_ports_are_free_distinct_and_in_range() -> None:
    ports = pick_free_ports(5, companion_offset=GRPC_PORT_OFFSET)
    companions = [port + GRPC_PORT_OFFSET for port in ports]
    assert all(port < 65535 for port in companions)
    assert len(set(ports) | set(companions)) == 10
    assert all(is_port_free(port) for port in ports + companions)


def test_seaweed_ports_include_the_grpc_twins() -> None:
    ports = SeaweedPorts.pick()
    assert len(set(ports.all_ports())) == 10


def test_a_listening_port_is_not_free() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert not is_port_free(listener.getsockname()[1])
