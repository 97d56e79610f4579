"""Bridge networks: one Linux bridge per network, holding the gateway address."""

from __future__ import annotations

from .. import names
from ..diff import Action
from ..model import Bridge
from .context import Context, missing_ok
from .sysctl import write


def _configure(ctx: Context, res: Bridge, index: int, fields: tuple[str, ...] | None) -> None:
    def wanted(field: str) -> bool:
        return fields is None or field in fields

    if fields is None:
        ctx.ipr.link("set", index=index, ifalias=names.mark(ctx.scope, "network", res.network))
    if res.mtu is not None and wanted("mtu"):
        ctx.ipr.link("set", index=index, mtu=res.mtu)
    if wanted("address"):
        ctx.ipr.flush_addr(index=index, family=2)
        if res.address:
            addr, prefixlen = res.address.split("/")
            ctx.ipr.addr("add", index=index, address=addr, prefixlen=int(prefixlen))
    if wanted("route_localnet"):
        write(f"net/ipv4/conf/{res.ifname}/route_localnet", "1" if res.route_localnet else "0")
    if wanted("up"):
        ctx.ipr.link("set", index=index, state="up" if res.up else "down")


def execute(ctx: Context, action: Action) -> None:
    res = action.resource
    assert isinstance(res, Bridge)
    if action.op == "delete":
        index = ctx.ifindex(ctx.ipr, res.ifname)
        if index is not None:
            with missing_ok():
                ctx.ipr.link("del", index=index)
        return
    if action.op == "create":
        ctx.ipr.link("add", ifname=res.ifname, kind="bridge")
    index = ctx.ifindex(ctx.ipr, res.ifname)
    assert index is not None
    _configure(ctx, res, index, action.fields if action.op == "change" else None)
