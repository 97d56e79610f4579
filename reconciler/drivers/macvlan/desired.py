"""The macvlan driver's desired objects: a VLAN parent and a host shim per network when needed, and a
macvlan child of the parent per container."""

from __future__ import annotations

from ... import names
from ...endpoints import Endpoint, recorded_address
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
    shim = recorded_address(record, name, HOST_SHIM) if net.host_access else None
    if shim is not None:
        routes = sorted(f"{ep.address}/32" for ep in members if ep.address is not None)
        out.append(
            MacvlanShim(
                network=name,
                ifname=names.shim_ifname(scope, name),
                parent=net.parent,
                address=f"{shim}/32",
                mac=names.container_mac(shim),
                mtu=net.mtu,
                routes=",".join(routes),
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
