"""The bridge driver's desired objects: a bridge holding the gateway, a veth pair per container."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ... import names
from ...model import Bridge, Iface, Resource
from ..driver import Attachment, NetworkPart

if TYPE_CHECKING:
    from ...spec import IP, Net, Network

# An omitted `mtu` is the driver's default, whatever an earlier spec set: Docker's for a bridge network
# (the kernel's for a new bridge or veth). Overlay networks get theirs from the underlay
# (overlay.cluster.local_spec) before they get here.
BRIDGE_MTU = 1500


def gateway(net: Network, subnet: Net) -> IP:
    """A bridge network always has one per family (default: the first address)."""
    given = net.gateway if subnet.version == 4 else net.gateway6
    if given is not None:
        return given
    return subnet.network_address + 1


def bridge(part: NetworkPart) -> list[Resource]:
    """The gateway of each family the network has, IPv4 first."""
    name, net, scope = part.name, part.net, part.scope
    cidrs = []
    for subnet in part.record.networks[name].prefixes():
        cidrs.append(f"{gateway(net, subnet)}/{subnet.prefixlen}")
    return [Bridge(name, names.bridge_ifname(scope, name), ",".join(cidrs), _mtu(net))]


def veth(att: Attachment) -> Iface:
    ep, net, scope = att.ep, att.net, att.scope
    return Iface(
        container=ep.container,
        network=ep.network,
        netns=att.netns,
        ifname=att.ifname,
        host_ifname=names.host_veth_ifname(scope, ep.container, ep.network),
        bridge=names.bridge_ifname(scope, ep.network),
        address=att.address,
        mac=att.mac,
        mtu=_mtu(net),
    )


def _mtu(net: Network) -> int:
    return BRIDGE_MTU if net.mtu is None else net.mtu
