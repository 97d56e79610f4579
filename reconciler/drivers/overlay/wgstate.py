"""The WireGuard device in and out of the state model: observing it and carrying out its actions."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ... import names
from ...model import Resource
from ...rtnl import IFF_UP, IFLA_IFALIAS, IFLA_MTU, AddrMsg, Rtnl, attr
from . import wgdevice
from .wgmodel import Wireguard

if TYPE_CHECKING:
    # Only types: observation is imported by the overlay's stage, which apply's executor table imports.
    from ...apply.context import Context
    from ...diff import Action

MARK_KIND = "wireguard"


def observe_wireguard(sock: Rtnl, scope: str, addresses: list[AddrMsg]) -> list[Resource]:
    """The scope's device, if it exists and is ours, with what `wg` reads of it."""
    ifname = names.wireguard_ifname(scope)
    found = sock.links(ifname)
    if not found or names.parse_mark(found[0].alias) != (scope, MARK_KIND, ifname):
        return []  # an unmarked device of that name is someone else's: the plan's conflicts name it
    link = found[0]
    config = wgdevice.read(ifname)
    cidrs = sorted(f"{a.address}/{a.prefixlen}" for a in addresses if a.index == link.index)
    return [
        Wireguard(
            ifname=ifname,
            port=config.port if config else 0,
            public_key=config.public_key if config else "",
            address=",".join(cidrs),
            peers=config.peers if config else (),
            mtu=link.mtu,
            up=bool(link.flags & IFF_UP),
        )
    ]


def execute_wireguard(ctx: Context, action: Action) -> None:
    res = action.resource
    assert isinstance(res, Wireguard)
    sock = ctx.rtnl
    if action.op == "delete":
        wgdevice.delete(sock, res.ifname)
        return
    fields = action.fields if action.op == "change" else None
    if fields is None:
        wgdevice.create(sock, res.ifname)
    index = sock.ifindex(res.ifname)
    assert index is not None
    # Keys and peers before the address: the route into the tunnel appears with a tunnel to take.
    before = action.before if fields is not None and isinstance(action.before, Wireguard) else None
    _configure(res, before, fields)
    settings: list[bytes] = []
    if fields is None:
        settings.append(attr(IFLA_IFALIAS, names.mark(ctx.scope, MARK_KIND, res.ifname)))
    if res.mtu is not None and (fields is None or "mtu" in fields):
        settings.append(attr(IFLA_MTU, res.mtu))
    up = res.up if fields is None or "up" in fields else None
    sock.set_link(index, *settings, up=up)
    if fields is None:
        address, prefixlen = res.address.split("/")
        sock.add_address(index, address, int(prefixlen))


def _configure(res: Wireguard, before: Wireguard | None, fields: tuple[str, ...] | None) -> None:
    """One `wg set` with what differs from `before` (None: a new device, everything): a rotated key,
    the port, the peers added or changed and the peers gone."""
    wanted = None if before is None or fields is None else set(fields)
    key_file = res.key_file if wanted is None or "public_key" in wanted else None
    port = res.port if wanted is None or "port" in wanted else None
    old = {p.public_key: p for p in before.peers} if before is not None else {}
    changed = [p for p in res.peers if old.get(p.public_key) != p]
    kept = {p.public_key for p in res.peers}
    wgdevice.configure(res.ifname, key_file, port, changed, [k for k in old if k not in kept])
