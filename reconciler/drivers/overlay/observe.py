"""Kernel -> overlay state: our VXLAN devices with their FDB and neighbour entries, plus what host
selection and conflict checks need (local addresses, other VXLAN devices)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from ... import names
from ...model import Resource
from ...rtnl import IFF_UP, Rtnl
from .model import Fdb, Neigh, Vxlan
from .netlink import AF_BRIDGE, NTF_SELF, NUD_PERMANENT, neighbours, vxlan_data
from .wgstate import observe_wireguard


@dataclass
class OverlayObserved:
    resources: list[Resource] = field(default_factory=list)
    # Every local address -> the MTU of its interface (the underlay MTU when it is the VTEP).
    local_addresses: dict[str, int] = field(default_factory=dict)
    # (VNI, UDP port) of VXLAN devices that are not this scope's -> their name: the kernel allows one.
    foreign_vnis: dict[tuple[int, int], str] = field(default_factory=dict)


def observe_overlay(scope: str) -> OverlayObserved:
    obs = OverlayObserved()
    with Rtnl() as sock:
        # The kernel filters by kind: a host with a thousand veths sends its VXLAN devices only; the
        # few other links this needs (their bridges, interfaces with an address) are fetched by index.
        vxlans = sock.links(kind="vxlan")
        addresses = sock.addresses(socket.AF_UNSPEC)  # an underlay may be IPv6
        links = {link.index: link for link in vxlans}
        for index in {link.master for link in vxlans if link.master} | {a.index for a in addresses}:
            if index not in links:
                links.update((link.index, link) for link in sock.links(index=index))
        ours: dict[int, str] = {}  # ifindex -> network
        for link in vxlans:
            index = link.index
            data = vxlan_data(link)
            mark = names.parse_mark(link.alias)
            if mark is None or mark[0] != scope or mark[1] != "vxlan":
                obs.foreign_vnis[(data.vni, data.port)] = link.ifname
                continue
            ours[index] = mark[2]
            master = links.get(link.master or -1)
            obs.resources.append(
                Vxlan(
                    network=mark[2],
                    ifname=link.ifname,
                    vni=data.vni,
                    local=data.local,
                    port=data.port,
                    bridge=master.ifname if master else "",
                    mtu=link.mtu,
                    learning=data.learning,
                    proxy=data.proxy,
                    up=bool(link.flags & IFF_UP),
                )
            )
        for addr in addresses:
            owner = links.get(addr.index)
            obs.local_addresses[addr.address] = owner.mtu if owner else 0
        obs.resources += observe_wireguard(sock, scope, addresses)
        if not ours:
            return obs
        # Every entry on our devices is ours: the devices are.
        for msg in neighbours(sock, AF_BRIDGE):
            network = ours.get(msg.ifindex)
            if network is not None and msg.flags & NTF_SELF and msg.dst and msg.lladdr:
                obs.resources.append(Fdb(network, links[msg.ifindex].ifname, msg.lladdr, msg.dst))
        for msg in neighbours(sock, socket.AF_INET):
            network = ours.get(msg.ifindex)
            if network is not None and msg.dst:
                obs.resources.append(Neigh(network, links[msg.ifindex].ifname, msg.dst, msg.lladdr or ""))
        for msg in neighbours(sock, socket.AF_INET6):
            network = ours.get(msg.ifindex)
            # Permanent ones only: the kernel keeps its own (multicast, a link-local's) beside ours.
            if network is not None and msg.dst and msg.state & NUD_PERMANENT:
                obs.resources.append(Neigh(network, links[msg.ifindex].ifname, msg.dst, msg.lladdr or ""))
    return obs
