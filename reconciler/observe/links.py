"""Netlink dumps turned into plain records: links, addresses and routes of one namespace."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPRoute

from .. import names

IFF_UP = 1


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
    addresses: list[str] = field(default_factory=list)  # address/prefixlen, IPv4 only

    @property
    def mark(self) -> tuple[str, str, str] | None:
        return names.parse_mark(self.alias)


@dataclass
class DefaultRoute:
    gateway: str | None
    oif: int | None
    proto: int


@dataclass
class Netlink:
    links: dict[int, Link]
    routes: list[Any]

    def by_name(self) -> dict[str, Link]:
        return {link.ifname: link for link in self.links.values()}


def read_links(ipr: IPRoute) -> dict[int, Link]:
    links: dict[int, Link] = {}
    for msg in ipr.link("dump"):
        links[msg["index"]] = Link(
            index=msg["index"],
            ifname=msg.get("ifname"),
            alias=msg.get("ifalias"),
            kind=msg.get(("linkinfo", "kind")),
            master=msg.get("master"),
            up=bool(msg["flags"] & IFF_UP),
            mtu=msg.get("mtu"),
            mac=msg.get("address"),
        )
    return links


def read_addresses(ipr: IPRoute, links: dict[int, Link]) -> None:
    for msg in ipr.addr("dump", family=socket.AF_INET):
        link = links.get(msg["index"])
        if link is not None:
            link.addresses.append(f"{msg.get('address')}/{msg['prefixlen']}")
    for link in links.values():
        link.addresses.sort()


def default_routes(ipr: IPRoute) -> list[DefaultRoute]:
    return [
        DefaultRoute(msg.get("gateway"), msg.get("oif"), msg["proto"])
        for msg in ipr.route("dump", family=socket.AF_INET, table=254)
        if msg["dst_len"] == 0
    ]


def route_prefixes(ipr: IPRoute, skip: set[int]) -> list[ipaddress.IPv4Network]:
    """Prefixes the host routes through interfaces other than `skip` (ours): IPAM must avoid them."""
    out = []
    for msg in ipr.route("dump", family=socket.AF_INET, table=254):
        if msg["dst_len"] == 0 or msg.get("oif") in skip:
            continue
        out.append(ipaddress.IPv4Network(f"{msg.get('dst')}/{msg['dst_len']}", strict=False))
    return out
