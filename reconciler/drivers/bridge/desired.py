"""The bridge driver's desired objects: a bridge holding the gateway, a veth pair per container."""

from __future__ import annotations

import ipaddress

from ... import names
from ...model import Bridge, Iface, Resource
from ...spec import Network
from ..driver import Attachment, NetworkPart

# An omitted `mtu` is the driver's default, whatever an earlier spec set: Docker's for a bridge network
# (the kernel's for a new bridge or veth). Overlay networks get theirs from the underlay
# (overlay.cluster.local_spec) before they get here.
BRIDGE_MTU = 1500


def gateway(net: Network, subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    """A bridge network always has one (default: the first address)."""
    if net.gateway is not None:
        return net.gateway
    return subnet.network_address + 1


def bridge(part: NetworkPart) -> list[Resource]:
    name, net, scope = part.name, part.net, part.scope
    subnet = ipaddress.IPv4Network(part.record.networks[name].subnet)
    gw = gateway(net, subnet)
    return [Bridge(name, names.bridge_ifname(scope, name), f"{gw}/{subnet.prefixlen}", _mtu(net))]


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
