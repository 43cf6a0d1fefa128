"""SSRF guard for webhook targets.

A target whose host resolves to a loopback, link-local (cloud metadata at 169.254.169.254
included), private, shared, reserved, multicast, unspecified, 6to4 or site-local address is
refused, unless the address is inside one of the operator's `events.allowed_networks`. The check
runs when a webhook is saved and again at every delivery, where the request then goes to the
very address that was checked (DNS rebinding cannot swap it in between).
"""

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Well-known metadata endpoints that are not all caught by the categories above.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)


class TargetRefused(ValueError):
    """The URL may not be used as a webhook target; the message says why."""


@dataclass(frozen=True)
class ResolvedTarget:
    url: str
    scheme: str
    host: str
    port: int
    address: IpAddress


def parse_networks(raw: Sequence[str]) -> list[IpNetwork]:
    return [ipaddress.ip_network(n, strict=False) for n in raw]


def _forbidden_kind(address: IpAddress) -> str | None:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return _forbidden_kind(address.ipv4_mapped)
        # Python 3.11 counts these global: 6to4 (2002::/16, deprecated; it reaches the IPv4
        # address it embeds, 127.0.0.1 in 2002:7f00:1::) and the old site-local fec0::/10.
        if address.sixtofour is not None:
            return "a 6to4 address"
        if address.is_site_local:
            return "a site-local address"
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private or address.is_reserved or not address.is_global:
        return "a private or reserved address"
    return None


def check_address(address: IpAddress, allowed: Sequence[IpNetwork]) -> None:
    kind = _forbidden_kind(address)
    if kind is None or any(address in network for network in allowed):
        return
    raise TargetRefused(
        f"the target resolves to {address}, {kind}; webhooks may only reach public addresses "
        "(an operator can allow networks with LOOKOUT_EVENTS__ALLOWED_NETWORKS)"
    )


def check_url_shape(url: str) -> tuple[str, str, int]:
    # urlsplit drops leading spaces, tabs and newlines that httpx refuses when it sends: such a
    # URL was saved, then failed every delivery without a word. Both parsers must accept it.
    if any(c.isspace() or not c.isprintable() for c in url):
        raise TargetRefused("the target URL contains a space or a control character")
    try:
        parts = urlsplit(url)
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL) as exc:  # e.g. "http://[::1/", an IDNA-2008 name
        raise TargetRefused(f"the target URL cannot be parsed: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("the target URL must start with http:// or https://")
    if not parts.hostname:
        raise TargetRefused("the target URL has no host")
    if parts.username or parts.password:
        raise TargetRefused("the target URL must not carry credentials")
    try:
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"the target URL has an invalid port: {exc}") from exc
    if port == 0:  # no receiver listens on it (and `or` took it for the default port)
        raise TargetRefused("the target URL has an invalid port: 0")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def resolve_target(url: str, allowed: Sequence[IpNetwork]) -> ResolvedTarget:
    """Resolve the URL's host; every address it resolves to must pass (raises TargetRefused)."""
    scheme, host, port = check_url_shape(url)
    try:
        literal: IpAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses: list[IpAddress] = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except (socket.gaierror, UnicodeError) as exc:
            raise TargetRefused(f"the target host {host!r} does not resolve: {exc}") from exc
        addresses = list(
            dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos)
        )
        if not addresses:
            raise TargetRefused(f"the target host {host!r} does not resolve")
    for address in addresses:
        check_address(address, allowed)
    return ResolvedTarget(url=url, scheme=scheme, host=host, port=port, address=addresses[0])
