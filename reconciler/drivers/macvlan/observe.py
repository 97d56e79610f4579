"""Our macvlan objects: VLAN parents we created, host_access shims with their routes, and the
containers' macvlan children."""

from __future__ import annotations

from ...model import Iface, MacvlanShim, Resource, Vlan
from ...observe.links import Link, marked_routes
from ...rtnl import Rtnl


def macvlan_host(ours: list[Link], links: dict[int, Link], sock: Rtnl) -> list[Resource]:
    out: list[Resource] = []
    shims = [link for link in ours if link.mark and link.mark[1] == "shim"]
    routes = marked_routes(sock) if shims else {}
    for link in ours:
        m = link.mark
        parent = links.get(link.link or 0)
        if m and m[1] == "vlan":
            out.append(Vlan(link.ifname, parent.ifname if parent else "", link.vlan_id or 0, link.up))
    for link in shims:
        assert link.mark is not None
        parent = links.get(link.link or 0)
        out.append(
            MacvlanShim(
                network=link.mark[2],
                ifname=link.ifname,
                parent=parent.ifname if parent else "",
                address=",".join(link.addresses + link.addresses6) or "",
                mac=link.mac,
                mtu=link.mtu,
                routes=",".join(sorted(routes.get(link.index, []))),
                up=link.up,
            )
        )
    return out


def child_iface(container: str, network: str, netns: str, link: Link, host_links: dict[int, Link]) -> Iface:
    parent = host_links.get(link.link or 0)
    return Iface(
        container=container,
        network=network,
        netns=netns,
        ifname=link.ifname,
        host_ifname="",
        bridge="",
        address=",".join(link.addresses + link.addresses6) or "",
        mac=link.mac,
        mtu=link.mtu,
        up=link.up,
        parent=parent.ifname if parent else "",
        mode=link.macvlan_mode or "",
    )
