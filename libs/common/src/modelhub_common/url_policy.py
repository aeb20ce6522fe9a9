"""Which URLs a service may call on an admin's say-so (connections to model servers, tool servers, pulls).

An admin-supplied URL is fetched by the service, from inside the cluster: without a policy it can reach the
cloud's metadata endpoint (credentials), or ports on the service's own host. The rule:

* link-local addresses (``169.254.0.0/16``, ``fe80::/10``, which hold the cloud metadata endpoints) and the
  known metadata hosts are refused always;
* loopback, private, shared (CGNAT), unspecified and reserved addresses are refused unless the service's
  ``allow_private_urls`` setting allows them (the dev stack and the tests do: everything runs on loopback);
* a host name is resolved, and every address it resolves to must pass.

Connect-time re-checks (a name that resolves differently later) are not done here: callers check again
before each fetch.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from modelhub_common.errors import ModelhubError

_METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data", "instance-data.ec2.internal"})
_METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}  # AWS IPv6, Alibaba
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")


class UrlNotAllowedError(ModelhubError):
    """The URL points where this service may not go (the message says why and what to change)."""

    code = "url_not_allowed"
    http_status = 422


def _address_problem(address: ipaddress.IPv4Address | ipaddress.IPv6Address, *, allow_private: bool) -> str | None:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    if address.is_link_local or address in _METADATA_ADDRESSES:
        return "is link-local or a cloud metadata address, which is never allowed"
    private = (
        address.is_loopback
        or address.is_private
        or address.is_unspecified
        or address.is_reserved
        or address.is_multicast
        or (isinstance(address, ipaddress.IPv4Address) and address in _SHARED)
    )
    if private and not allow_private:
        return (
            "is a loopback or private address; an admin can allow those with the service's allow_private_urls "
            "setting (for servers inside the company network)"
        )
    return None


def check_outbound_url(url: str, *, allow_private: bool, field: str = "url") -> None:
    """Raises :class:`UrlNotAllowedError` unless ``url`` is http(s) to a host the policy above allows. Blocking
    (it resolves the host name): call it in a thread from async code."""
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise UrlNotAllowedError(f"{field}: must be an http(s) URL such as http://ollama:11434")
    if host in _METADATA_HOSTS:
        raise UrlNotAllowedError(f"{field}: {host} is a cloud metadata host, which is never allowed")
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, ValueError):
            # Not resolvable from here (yet): nothing to check now; the fetch checks again.
            return
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    for address in addresses:
        problem = _address_problem(address, allow_private=allow_private)
        if problem:
            shown = host if str(address) == host else f"{host} ({address})"
            raise UrlNotAllowedError(f"{field}: {shown} {problem}")
