"""Bridge networks: one Linux bridge per network, holding the gateway address."""

from __future__ import annotations

from ... import names
from ...apply.context import Context, missing_ok
from ...apply.sysctl import write
from ...diff import Action
from ...model import Bridge
from ...rtnl import IFLA_ADDRESS, IFLA_IFALIAS, IFLA_MTU, attr


def _set_addresses(ctx: Context, index: int, address: str | None, before: Bridge | None) -> None:
    """Overlay bridges hold several addresses (gateway, node address, service VIPs): a change adds
    and removes single ones, so adding a VIP does not take the gateway away for a moment."""
    wanted = set(address.split(",")) if address else set()
    if before is None or not before.address:
        ctx.rtnl.flush_addresses(index)
        had: set[str] = set()
    else:
        had = set(before.address.split(","))
    for cidr in sorted(had - wanted):
        addr, prefixlen = cidr.split("/")
        with missing_ok():
            ctx.rtnl.del_address(index, addr, int(prefixlen))
    for cidr in sorted(wanted - had):
        addr, prefixlen = cidr.split("/")
        ctx.rtnl.add_address(index, addr, int(prefixlen))


def _configure(
    ctx: Context, res: Bridge, index: int, fields: tuple[str, ...] | None, before: Bridge | None = None
) -> None:
    def wanted(field: str) -> bool:
        return fields is None or field in fields

    sock = ctx.rtnl
    if fields is None:
        sock.set_link(index, attr(IFLA_IFALIAS, names.mark(ctx.scope, "network", res.network)))
    if res.mac is not None and wanted("mac"):
        sock.set_link(index, attr(IFLA_ADDRESS, bytes.fromhex(res.mac.replace(":", ""))))
    if res.mtu is not None and wanted("mtu"):
        sock.set_link(index, attr(IFLA_MTU, res.mtu))
    if wanted("address"):
        _set_addresses(ctx, index, res.address, before)
    if wanted("up"):
        sock.set_link(index, up=res.up)


def set_route_localnet(actions: list[Action]) -> None:
    """route_localnet of the bridges `actions` create or change it on. It runs after the nftables
    transaction: it lets the kernel take 127.0.0.0/8 from containers, which only our localnet chain
    drops (firewall.py), so a bridge never has it before the chain exists."""
    for action in actions:
        res = action.resource
        if isinstance(res, Bridge) and action.op != "delete" and _sets("route_localnet", action):
            write(f"net/ipv4/conf/{res.ifname}/route_localnet", "1" if res.route_localnet else "0")


def _sets(field: str, action: Action) -> bool:
    return action.op != "change" or field in action.fields


def execute(ctx: Context, action: Action) -> None:
    res = action.resource
    assert isinstance(res, Bridge)
    if action.op == "delete":
        index = ctx.host_index(res.ifname)
        ctx.host_link_changed(res.ifname)
        if index is not None:
            with missing_ok():
                ctx.rtnl.del_link(index)
        return
    if action.op == "create":
        ctx.host_link_changed(res.ifname)
        ctx.rtnl.add_link(res.ifname, "bridge")
        if res.address and ":" in res.address:
            # The kernel solicits a neighbour for a forwarded packet (a published port's) from the
            # bridge's link-local address, and sends nothing while that is tentative: without DAD it
            # is usable the moment the first port brings the bridge's carrier up.
            write(f"net/ipv6/conf/{res.ifname}/accept_dad", "0")
    index = ctx.host_index(res.ifname)
    assert index is not None
    before = action.before if isinstance(action.before, Bridge) else None
    _configure(ctx, res, index, action.fields if action.op == "change" else None, before)
