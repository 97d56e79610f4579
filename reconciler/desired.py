"""Spec + IPAM record -> the desired state model: every kernel object, named and addressed."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from . import names
from .firewall import desired_firewall
from .ipam import gateway
from .model import Bridge, HostsFile, Iface, Netns, Route, State, Sysctl
from .spec import Spec
from .statedir import ScopeRecord


@dataclass(frozen=True)
class Endpoint:
    """A container's attachment to one network, resolved: what hosts files and nft rules need."""

    container: str
    network: str
    address: ipaddress.IPv4Address
    aliases: tuple[str, ...]


def endpoints(spec: Spec, record: ScopeRecord) -> dict[str, list[Endpoint]]:
    """Per container, its attachments in declaration order."""
    out: dict[str, list[Endpoint]] = {}
    for c, ctr in spec.containers.items():
        out[c] = [
            Endpoint(c, n, ipaddress.IPv4Address(record.networks[n].addresses[c]), tuple(att.aliases))
            for n, att in ctr.attachments().items()
        ]
    return out


def desired_state(spec: Spec, record: ScopeRecord, scope: str) -> State:
    state = State()
    eps = endpoints(spec, record)
    members: dict[str, list[Endpoint]] = {n: [] for n in spec.networks}
    for their in eps.values():
        for ep in their:
            members[ep.network].append(ep)
    # Each network's lines once: every member's hosts file repeats them (N²/networks lines in all).
    blocks = {n: "".join(_hosts_line(ep) for ep in eps) for n, eps in members.items()}
    if any(not n.internal for n in spec.networks.values()):
        state.add(Sysctl("net.ipv4.ip_forward", "1"))
    for name, net in spec.networks.items():
        subnet = ipaddress.IPv4Network(record.networks[name].subnet)
        gw = gateway(net, subnet)
        state.add(Bridge(name, names.bridge_ifname(scope, name), f"{gw}/{subnet.prefixlen}", net.mtu))
    for c, ctr in spec.containers.items():
        path = ctr.netns or names.netns_path(c)
        state.add(Netns(c, path, adopted=ctr.netns is not None))
        for index, ep in enumerate(eps[c]):
            net = spec.networks[ep.network]
            subnet = ipaddress.IPv4Network(record.networks[ep.network].subnet)
            state.add(
                Iface(
                    container=c,
                    network=ep.network,
                    netns=path,
                    ifname=names.container_ifname(index),
                    host_ifname=names.host_veth_ifname(scope, c, ep.network),
                    bridge=names.bridge_ifname(scope, ep.network),
                    address=f"{ep.address}/{subnet.prefixlen}",
                    mac=names.container_mac(ep.address),
                    mtu=net.mtu,
                )
            )
        route = _default_route(spec, record, c, path)
        if route is not None:
            state.add(route)
        state.add(HostsFile(c, hosts_file(scope, eps[c], blocks)))
    for resource in desired_firewall(spec, record, scope, eps):
        state.add(resource)
    return state


def _default_route(spec: Spec, record: ScopeRecord, container: str, path: str) -> Route | None:
    """Via the first non-internal network's gateway; internal networks give no way out."""
    for index, n in enumerate(spec.containers[container].attachments()):
        net = spec.networks[n]
        if not net.internal:
            gw = gateway(net, ipaddress.IPv4Network(record.networks[n].subnet))
            return Route(container, path, str(gw), names.container_ifname(index))
    return None


def hosts_file(scope: str, mine: list[Endpoint], blocks: dict[str, str]) -> str:
    """Docker's scope: a container resolves the names and aliases of containers on networks it shares.
    `blocks`: per network, the lines of its members."""
    header = (
        f"{names.HOSTS_HEADER} (scope {scope}); edits are overwritten\n"
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
    )
    return header + "".join(blocks[own.network] for own in mine)


def _hosts_line(ep: Endpoint) -> str:
    return "\t".join([str(ep.address), ep.container, *ep.aliases]) + "\n"
