"""Our macvlan host objects: VLAN parents we created and host_access shims with their routes."""

from __future__ import annotations

from ...model import MacvlanShim, Resource, Vlan
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
                address=",".join(link.addresses) or "",
                mac=link.mac,
                mtu=link.mtu,
                routes=",".join(sorted(routes.get(link.index, []))),
                up=link.up,
            )
        )
    return out
