"""The macvlan driver's desired objects: a VLAN parent and a host shim per network when needed, and a
macvlan child of the parent per container."""

from __future__ import annotations

from ... import names
from ...endpoints import Endpoint, recorded_address, recorded_address6
from ...model import Iface, MacvlanShim, Resource, Vlan
from ...names import HOST_SHIM
from ...spec import Network
from ...statedir import ScopeRecord
from ..driver import Attachment, NetworkPart


def host_objects(part: NetworkPart) -> list[Resource]:
    return list(
        _macvlan_host(part.scope, part.name, part.net, part.record, part.members, part.existing_links)
    )


def _macvlan_host(
    scope: str,
    name: str,
    net: Network,
    record: ScopeRecord,
    members: list[Endpoint],
    existing: frozenset[str],
) -> list[Vlan | MacvlanShim]:
    """What a macvlan network needs on the host: its VLAN parent (unless it exists) and the shim."""
    assert net.parent is not None
    out: list[Vlan | MacvlanShim] = []
    vlan = net.vlan()
    if vlan is not None and net.parent not in existing:
        out.append(Vlan(net.parent, vlan[0], vlan[1]))
    if net.host_access:
        shim4, shim6 = recorded_address(record, name, HOST_SHIM), recorded_address6(record, name, HOST_SHIM)
        cidrs = [f"{shim4}/32"] if shim4 else []
        cidrs += [f"{shim6}/128"] if shim6 else []
        # One host route per container address of each family, /32 and /128.
        routes = [f"{ep.address}/32" for ep in members if ep.address is not None]
        routes += [f"{ep.address6}/128" for ep in members if ep.address6 is not None]
        out.append(
            MacvlanShim(
                network=name,
                ifname=names.shim_ifname(scope, name),
                parent=net.parent,
                address=",".join(cidrs),
                mac=names.container_mac(shim4) if shim4 else names.stable_mac(scope, HOST_SHIM, name),
                mtu=net.mtu,
                routes=",".join(sorted(routes)),
            )
        )
    return out


def child(att: Attachment) -> Iface:
    ep, net = att.ep, att.net
    return Iface(
        container=ep.container,
        network=ep.network,
        netns=att.netns,
        ifname=att.ifname,
        host_ifname="",
        bridge=None,
        address=att.address,
        mac=None if net.mode == "passthru" else att.mac,  # passthru takes the parent's MAC
        mtu=net.mtu,
        parent=net.parent,
        mode=net.mode,
    )
