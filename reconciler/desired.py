"""Spec + IPAM record -> the desired state model: every kernel object, named and addressed."""

from __future__ import annotations

import functools
import ipaddress
from typing import TYPE_CHECKING

from . import names
from .drivers.driver import Attachment, NetworkPart
from .drivers.registry import driver_of
from .endpoints import Endpoint, endpoints, hosts_file, text
from .firewall.layout import desired_firewall
from .ipam import gateway
from .model import HostsFile, Iface, Netns, Route, State, Sysctl
from .statedir import ScopeRecord

if TYPE_CHECKING:
    from .spec import Network, Spec


def desired_state(
    spec: Spec, record: ScopeRecord, scope: str, existing_links: frozenset[str] = frozenset()
) -> State:
    """`existing_links`: host links that are not ours; a VLAN parent among them is used as it is."""
    state = State()
    eps = endpoints(spec, record)
    members: dict[str, list[Endpoint]] = {n: [] for n in spec.networks}
    for their in eps.values():
        for ep in their:
            members[ep.network].append(ep)
    # Some drivers' networks route through the host; others (macvlan) bypass its IP stack.
    routed_out = [n for n in spec.networks.values() if driver_of(n).routed and not n.internal]
    if any(n.has_ipv4 for n in routed_out):
        state.add(Sysctl("net.ipv4.ip_forward", "1"))
    if any(n.has_ipv6 for n in routed_out):
        state.add(Sysctl(names.IPV6_FORWARDING, "1"))
    ways = _ways_out(spec, record)
    for name, net in spec.networks.items():
        part = NetworkPart(scope, name, net, record, members[name], existing_links)
        for res in driver_of(net).network(part):
            state.add(res)
    for c, ctr in spec.containers.items():
        path = ctr.netns or names.netns_path(c)
        state.add(Netns(c, path, adopted=ctr.netns is not None))
        for index, ep in enumerate(eps[c]):
            state.add(
                _iface(scope, spec.networks[ep.network], record, ep, path, names.container_ifname(index))
            )
        for version in (4, 6):
            route = _default_route(spec, ways, c, path, version)
            if route is not None:
                state.add(route)
        state.add(HostsFile(c, hosts_file(scope, eps[c])))
    for resource in desired_firewall(spec, record, scope, eps):
        state.add(resource)
    return state


@functools.lru_cache(maxsize=1024)
def _subnet(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """Parsed once per network, not once per container (a thousand parses showed in the profile)."""
    return ipaddress.ip_network(text)


def _iface(scope: str, net: Network, record: ScopeRecord, ep: Endpoint, path: str, ifname: str) -> Iface:
    rec = record.networks.get(ep.network)
    cidrs = []
    if rec is not None:  # IPv4 first, as the kernel lists them
        if ep.address is not None:
            cidrs.append(f"{ep.address}/{_subnet(rec.subnet).prefixlen}")
        if ep.address6 is not None:
            cidrs.append(f"{text(ep.address6)}/{_subnet(rec.subnet6).prefixlen}")
    address = ",".join(cidrs) or None
    mac = names.container_mac(ep.address) if ep.address else names.stable_mac(scope, ep.container, ep.network)
    return driver_of(net).attachment(Attachment(scope, net, ep, path, ifname, address, mac))


def _ways_out(spec: Spec, record: ScopeRecord) -> dict[tuple[str, int], tuple[str, bool]]:
    """(network, family) -> (gateway, onlink) of each network with a way out in that family: a
    non-internal bridge, or a macvlan network with a gateway. Once per network, not per container."""
    out = {}
    for n, net in spec.networks.items():
        rec = record.networks.get(n)
        for version in (4, 6):
            text = None if rec is None else rec.subnet if version == 4 else rec.subnet6
            if net.internal or not text:
                continue
            subnet = _subnet(text)
            gw = gateway(net, subnet)
            if gw is not None:
                # A link-local gateway is on-link by definition: the kernel takes it without the flag.
                out[n, version] = (str(gw), gw not in subnet and not gw.is_link_local)
    return out


def _default_route(
    spec: Spec, ways: dict[tuple[str, int], tuple[str, bool]], container: str, path: str, version: int
) -> Route | None:
    """Per family, via the first network with a way out in it."""
    for index, n in enumerate(spec.containers[container].attachments()):
        way = ways.get((n, version))
        if way is not None:
            return Route(container, path, way[0], names.container_ifname(index), onlink=way[1])
    return None
