"""Scopes side by side on one host: what the others hold, and the pure checks that refuse a spec
colliding with it before anything changes.

Two scopes follow the rules of one spec. Subnets may overlap only between macvlan networks on
different parents (separate L2 segments), and not when both have host_access (the host routes an
address to one of them). A host port is published once per protocol and host address, where every
address (0.0.0.0) collides with each single one (Docker: "port is already allocated").

Subnets come from the other scopes' records (an allocation outlives a kernel reset, as auto-picked
subnets do) and from the addresses of every interface that is not this scope's: a foreign bridge such
as docker0, or another scope's bridge whose record is gone. A macvlan network is not checked against
interfaces: its subnet is its LAN's, which the parent itself often holds.

Ports come from the other scopes' live nft tables, not from records: a port is taken while it answers.
Records do not hold ports (a port change writes no record), a lost state directory would hide them,
and after a kernel reset no scope answers on a port, so the first to apply gets it, as after a Docker
restart. The records only name the container behind a DNAT target address.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .names import HOST_SHIM
from .statedir import ScopeRecord

if TYPE_CHECKING:
    from .spec import Spec

Net = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class SubnetHolder:
    prefix: Net
    owner: str  # "network web of scope pets", "interface docker0"
    parent: str = ""  # a macvlan network's parent: its L2 segment
    host_access: bool = False
    interface: bool = False  # an address on a host interface, not a scope's record


@dataclass(frozen=True)
class LivePort:
    """A published port in another scope's nft table: `target` is the DNAT address ("" for the
    routing mesh of a service, which balances over several)."""

    scope: str
    protocol: str
    port: int
    host_ip: str | None  # None: every host address
    target: str


@dataclass(frozen=True)
class HeldPort:
    protocol: str
    port: int
    host_ip: str | None
    owner: str

    def __str__(self) -> str:
        return f"{self.host_ip or '0.0.0.0'}:{self.port}/{self.protocol}"


def network_owner(scope: str, network: str) -> str:
    return f"network {network} of scope {scope}"


def record_holders(others: dict[str, ScopeRecord]) -> list[SubnetHolder]:
    return [
        SubnetHolder(prefix, network_owner(s, n), rec.parent, HOST_SHIM in rec.addresses)
        for s, record in others.items()
        for n, rec in record.networks.items()
        for prefix in rec.prefixes()
    ]


@dataclass(frozen=True)
class Segment:
    """What the subnet checks read of a network: its L2 segment (a macvlan network's parent) and
    whether the host routes to it."""

    parent: str | None = None
    host_access: bool = False


@dataclass
class Claims:
    """What a spec takes that other scopes and the host may hold: its networks' segments (their subnets
    are in the record) and its published ports. Plain data: the compiled-spec cache keeps it."""

    segments: dict[str, Segment] = field(default_factory=dict)
    ports: list[HeldPort] = field(default_factory=list)


def claims(spec: Spec) -> Claims:
    segments = {name: Segment(net.parent, net.host_access) for name, net in spec.networks.items()}
    return Claims(segments, published(spec))


def subnet_conflicts(claims: Claims, record: ScopeRecord, holders: list[SubnetHolder]) -> list[str]:
    """One line per network of the spec whose subnet overlaps one another scope or interface holds."""
    out = []
    for name, rec in record.networks.items():
        net = claims.segments.get(name)
        if net is None:
            continue
        for subnet in rec.prefixes():
            out.extend(_subnet_conflict(name, net, subnet, holders))
    return out


def _subnet_conflict(name: str, net: Segment, subnet: Net, holders: list[SubnetHolder]) -> list[str]:
    segment = net.parent is not None  # on a host link's LAN, not routed by the host
    hit: dict[str, Net] = {}
    for h in holders:
        # overlaps() across families compares raw integers: an IPv6 prefix could "overlap" an IPv4 one.
        if h.owner in hit or h.prefix.version != subnet.version or not subnet.overlaps(h.prefix):
            continue
        if h.interface:
            clash = not segment
        elif segment and h.parent and h.parent != net.parent:
            clash = net.host_access and h.host_access  # separate segments, one host routing table
        else:
            clash = True
        if clash:
            hit[h.owner] = h.prefix
    if not hit:
        return []
    held = "; ".join(f"{prefix} of {owner}" for owner, prefix in hit.items())
    return [f"network {name}: subnet {subnet} overlaps {held} (pool overlaps with another one)"]


def published(spec: Spec) -> list[HeldPort]:
    """The host ports a spec publishes: containers' ports and services' routing-mesh ports."""
    out = [
        HeldPort(pm.protocol, pm.host_port, str(pm.host_ip) if pm.host_ip else None, f"container {c}")
        for c, ctr in spec.containers.items()
        for pm in ctr.port_mappings()
    ]
    out.extend(
        HeldPort(sp.protocol, sp.published, None, f"service {s}")
        for s, svc in spec.services.items()
        for sp in svc.service_ports()
        if sp.published is not None
    )
    return out


def held_ports(live: list[LivePort], others: dict[str, ScopeRecord]) -> list[HeldPort]:
    """Other scopes' live ports, each named by the container its record gives the target address."""
    by_address = {
        (s, address): c
        for s, record in others.items()
        for rec in record.networks.values()
        for c, address in (*rec.addresses.items(), *rec.addresses6.items())
    }
    out = []
    for p in live:
        container = by_address.get((p.scope, p.target))
        if container:
            owner = f"container {container} of scope {p.scope}"
        elif p.target:
            owner = f"scope {p.scope} (to {p.target})"
        else:
            owner = f"a service of scope {p.scope}"
        out.append(HeldPort(p.protocol, p.port, p.host_ip, owner))
    return out


SHOWN_PORTS = 3  # a range of a thousand colliding ports is one line, not a thousand


def port_conflicts(mine: list[HeldPort], theirs: list[HeldPort]) -> list[str]:
    """One line per publisher of this spec and holder it collides with."""
    by_port: dict[tuple[str, int], list[HeldPort]] = {}
    for q in theirs:
        by_port.setdefault((q.protocol, q.port), []).append(q)
    clashes: dict[tuple[str, str], list[tuple[HeldPort, HeldPort]]] = {}
    for p in mine:
        for q in by_port.get((p.protocol, p.port), []):
            if p.host_ip is None or q.host_ip is None or p.host_ip == q.host_ip:
                clashes.setdefault((p.owner, q.owner), []).append((p, q))
                break
    out = []
    for (publisher, holder), pairs in clashes.items():
        if len(pairs) == 1:
            (p, q), *_ = pairs
            out.append(f"{publisher}: host port {p}: port is already allocated: {holder} publishes {q}")
            continue
        shown = ", ".join(str(p) for p, _ in pairs[:SHOWN_PORTS])
        more = f" and {len(pairs) - SHOWN_PORTS} more" if len(pairs) > SHOWN_PORTS else ""
        out.append(f"{publisher}: host ports {shown}{more}: ports are already allocated by {holder}")
    return out
