"""Netlink dumps turned into plain records: links, addresses and routes of one namespace."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from .. import names
from ..rtnl import IFF_UP, RTNH_F_ONLINK, LinkMsg, Rtnl


@dataclass
class Link:
    index: int
    ifname: str
    alias: str | None
    kind: str | None
    master: int | None
    up: bool
    mtu: int
    mac: str
    addresses: list[str] = field(default_factory=list)  # address/prefixlen, IPv4
    addresses6: list[str] = field(default_factory=list)  # address/prefixlen, IPv6 but link-local
    link: int | None = None  # macvlan/vlan: the parent's index (in the host namespace)
    macvlan_mode: str | None = None
    vlan_id: int | None = None

    @property
    def mark(self) -> tuple[str, str, str] | None:
        return names.parse_mark(self.alias)


@dataclass
class DefaultRoute:
    gateway: str | None
    oif: int | None
    proto: int
    onlink: bool = False


@dataclass
class Netlink:
    links: dict[int, Link]
    routes: list[Any]

    def by_name(self) -> dict[str, Link]:
        return {link.ifname: link for link in self.links.values()}


def read_links(sock: Rtnl, only: Collection[str] | None = None) -> dict[int, Link]:
    """Every link, or `only` the links of these names (one request each, the absent ones left out):
    what a verification reads of the few links an apply touched, instead of every veth on the host."""
    msgs = sock.links() if only is None else [m for name in sorted(only) for m in sock.links(name)]
    return {msg.index: _link(msg) for msg in msgs}


def _link(msg: LinkMsg) -> Link:
    return Link(
        msg.index,
        msg.ifname,
        msg.alias,
        msg.kind,
        msg.master,
        bool(msg.flags & IFF_UP),
        msg.mtu,
        msg.mac,
        link=msg.link,
        macvlan_mode=msg.macvlan_mode,
        vlan_id=msg.vlan_id,
    )


def read_addresses(sock: Rtnl, links: dict[int, Link]) -> None:
    """Both families in one dump (a namespace costs one request, not two)."""
    for msg in sock.addresses(socket.AF_UNSPEC):
        link = links.get(msg.index)
        if link is not None:
            family = link.addresses6 if ":" in msg.address else link.addresses
            family.append(f"{msg.address}/{msg.prefixlen}")
    for link in links.values():
        link.addresses.sort()
        link.addresses6.sort()


def default_routes(sock: Rtnl, family: int = socket.AF_UNSPEC, protocol: int = 0) -> list[DefaultRoute]:
    """Both families by default: a container has one default route per family it has a way out in;
    `protocol`: only those of this protocol."""
    return [
        DefaultRoute(r.gateway, r.oif, r.proto, onlink=bool(r.flags & RTNH_F_ONLINK))
        for r in sock.routes(family, defaults=True, protocol=protocol)
    ]


def route_prefixes(sock: Rtnl, skip: set[int]) -> list[ipaddress.IPv4Network]:
    """Prefixes the host routes through interfaces other than `skip` (ours): IPAM must avoid them."""
    return [
        ipaddress.IPv4Network(f"{r.dst}/{r.dst_len}", strict=False)
        for r in sock.routes()
        if r.dst_len and r.oif not in skip
    ]


def marked_routes(sock: Rtnl) -> dict[int, list[str]]:
    """Our (protocol-marked) routes of the main table, both families, dst/len by output interface index."""
    out: dict[int, list[str]] = {}
    for r in sock.routes(socket.AF_UNSPEC):
        if r.proto == names.RTPROT and r.dst_len and r.oif is not None:
            out.setdefault(r.oif, []).append(f"{r.dst}/{r.dst_len}")
    return out
