"""Bridge networks: one Linux bridge per network, holding the gateway address."""

from __future__ import annotations

from .. import names
from ..diff import Action
from ..model import Bridge
from ..rtnl import IFLA_IFALIAS, IFLA_MTU, attr
from .context import Context, missing_ok
from .sysctl import write


def _configure(ctx: Context, res: Bridge, index: int, fields: tuple[str, ...] | None) -> None:
    def wanted(field: str) -> bool:
        return fields is None or field in fields

    sock = ctx.rtnl
    if fields is None:
        sock.set_link(index, attr(IFLA_IFALIAS, names.mark(ctx.scope, "network", res.network)))
    if res.mtu is not None and wanted("mtu"):
        sock.set_link(index, attr(IFLA_MTU, res.mtu))
    if wanted("address"):
        sock.flush_addresses(index)
        if res.address:
            addr, prefixlen = res.address.split("/")
            sock.add_address(index, addr, int(prefixlen))
    if wanted("route_localnet"):
        write(f"net/ipv4/conf/{res.ifname}/route_localnet", "1" if res.route_localnet else "0")
    if wanted("up"):
        sock.set_link(index, up=res.up)


def execute(ctx: Context, action: Action) -> None:
    res = action.resource
    assert isinstance(res, Bridge)
    if action.op == "delete":
        index = ctx.rtnl.ifindex(res.ifname)
        if index is not None:
            with missing_ok():
                ctx.rtnl.del_link(index)
        return
    if action.op == "create":
        ctx.rtnl.add_link(res.ifname, "bridge")
    index = ctx.rtnl.ifindex(res.ifname)
    assert index is not None
    _configure(ctx, res, index, action.fields if action.op == "change" else None)
