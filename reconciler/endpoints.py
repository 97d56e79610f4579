"""A container's attachments resolved to addresses (`Endpoint`), and its hosts file built from them:
what the firewall's elements and every driver's names need."""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import names
from .statedir import ScopeRecord

if TYPE_CHECKING:
    from .spec import Spec


@dataclass(frozen=True)
class Endpoint:
    """A container's attachment to one network, resolved: what hosts files and nft rules need."""

    container: str
    network: str
    address: ipaddress.IPv4Address | None  # None on a network without IPAM or without IPv4
    aliases: tuple[str, ...]
    address6: ipaddress.IPv6Address | None = None  # None on a network without IPv6

    @property
    def addressed(self) -> bool:
        return self.address is not None or self.address6 is not None


def endpoints(spec: Spec, record: ScopeRecord) -> dict[str, list[Endpoint]]:
    """Per container, its attachments in declaration order."""
    out: dict[str, list[Endpoint]] = {}
    for c, ctr in spec.containers.items():
        out[c] = [
            Endpoint(
                c, n, recorded_address(record, n, c), tuple(att.aliases), recorded_address6(record, n, c)
            )
            for n, att in ctr.attachments().items()
        ]
    return out


def recorded_address(record: ScopeRecord, network: str, key: str) -> ipaddress.IPv4Address | None:
    rec = record.networks.get(network)
    return ipaddress.IPv4Address(rec.addresses[key]) if rec and rec.subnet else None


def recorded_address6(record: ScopeRecord, network: str, key: str) -> ipaddress.IPv6Address | None:
    rec = record.networks.get(network)
    return ipv6_address(rec.addresses6[key]) if rec and rec.subnet6 else None


# ipaddress parses and prints an IPv6 address in tens of microseconds (IPv4 in a few): once per
# address, not once per use, was a visible share of a dual-stack run at 1,000 containers.
@functools.lru_cache(maxsize=65536)
def ipv6_address(text: str) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(text)


@functools.lru_cache(maxsize=65536)
def text(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """`str(address)`, computed once per IPv6 address (see `ipv6_address`)."""
    return str(address)


def hosts_file(scope: str, mine: list[Endpoint]) -> str:
    """The container's own names and localhost: its peers' names come from the resolver (reconciler.dns),
    so adding a container writes its own hosts file alone."""
    header = (
        f"{names.HOSTS_HEADER} (scope {scope}); edits are overwritten\n"
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
    )
    return header + "".join(hosts_line(ep) for ep in mine if ep.addressed)


def hosts_line(ep: Endpoint) -> str:
    """One line per family the endpoint has, IPv4 first."""
    return "".join(
        "\t".join([text(address), ep.container, *ep.aliases]) + "\n"
        for address in (ep.address, ep.address6)
        if address is not None
    )
