"""Macvlan objects: VLAN parents we create, host_access shims with their host routes, and the
containers' macvlan children.

The parent itself is never changed: children are only attached to it.
"""

from __future__ import annotations

import os
import struct

from ... import names
from ...apply.context import Context, missing_ok
from ...apply.sysctl import write
from ...diff import Action
from ...errors import HostConflict
from ...model import Iface, MacvlanShim, Vlan
from ...rtnl import (
    IFLA_ADDRESS,
    IFLA_IFALIAS,
    IFLA_LINK,
    IFLA_MACVLAN_MODE,
    IFLA_MTU,
    IFLA_NET_NS_FD,
    IFLA_VLAN_ID,
    MACVLAN_MODES,
    attr,
)


def _delete_link(ctx: Context, ifname: str) -> None:
    index = ctx.rtnl.ifindex(ifname)
    if index is not None:
        with missing_ok():
            ctx.rtnl.del_link(index)


def _parent(ctx: Context, ifname: str) -> bytes:
    index = ctx.rtnl.ifindex(ifname)
    assert index is not None, f"parent {ifname} vanished during the apply"
    return attr(IFLA_LINK, index)


def execute_vlan(ctx: Context, action: Action) -> None:
    res = action.resource
    assert isinstance(res, Vlan)
    if action.op == "delete":
        _delete_link(ctx, res.ifname)
        return
    if action.op == "create":
        vid = attr(IFLA_VLAN_ID, struct.pack("=H", res.vid))
        ctx.rtnl.add_link(res.ifname, "vlan", _parent(ctx, res.base), data=vid)
    mark = attr(IFLA_IFALIAS, names.mark(ctx.scope, "vlan", res.ifname))
    ctx.rtnl.set_link(0, mark, ifname=res.ifname, up=True)


def execute_shim(ctx: Context, action: Action) -> None:
    res = action.resource
    assert isinstance(res, MacvlanShim)
    if action.op == "delete":
        _delete_link(ctx, res.ifname)  # its routes go with it
        return
    fields = action.fields if action.op == "change" else None
    mtu = attr(IFLA_MTU, res.mtu) if res.mtu is not None else b""
    mac = attr(IFLA_ADDRESS, bytes.fromhex(res.mac.replace(":", ""))) if res.mac else b""
    if action.op == "create":
        bridge = attr(IFLA_MACVLAN_MODE, MACVLAN_MODES["bridge"])
        ctx.rtnl.add_link(res.ifname, "macvlan", _parent(ctx, res.parent), mtu, mac, data=bridge)
        if ":" in (res.address or ""):
            _quiet_ipv6(res.ifname)
    index = ctx.rtnl.ifindex(res.ifname)
    assert index is not None
    if fields is None:
        ctx.rtnl.set_link(index, attr(IFLA_IFALIAS, names.mark(ctx.scope, "shim", res.network)), up=True)
    else:
        ctx.rtnl.set_link(index, mtu if "mtu" in fields else b"", mac if "mac" in fields else b"", up=True)
    if fields is None or "address" in fields:
        ctx.rtnl.flush_addresses(index)
        for cidr in filter(None, (res.address or "").split(",")):
            addr, prefixlen = cidr.split("/")
            ctx.rtnl.add_address(index, addr, int(prefixlen))
    if fields is None or "routes" in fields or "address" in fields:
        _sync_routes(ctx, res, index, action.before)


def _quiet_ipv6(ifname: str) -> None:
    """Before it comes up: the shim is on a LAN whose router may advertise a prefix and a default route,
    which the host must not take through the shim (nor a SLAAC address, nor wait on DAD)."""
    for key, value in (("accept_ra", "0"), ("autoconf", "0"), ("accept_dad", "0")):
        write(f"net/ipv6/conf/{ifname}/{key}", value)


def _sync_routes(ctx: Context, res: MacvlanShim, index: int, before: object) -> None:
    """One /32 or /128 route per container address through the shim, from the shim's address of
    the family."""
    want = set(filter(None, (res.routes or "").split(",")))
    have = set(filter(None, (before.routes or "").split(","))) if isinstance(before, MacvlanShim) else set()
    sources = {":" in c: c.split("/")[0] for c in (res.address or "").split(",") if c}
    for dst in sorted(have - want):
        addr, prefixlen = dst.split("/")
        with missing_ok():
            ctx.rtnl.del_link_route(addr, int(prefixlen), index)
    for dst in sorted(want):
        addr, prefixlen = dst.split("/")
        ctx.rtnl.replace_link_route(addr, int(prefixlen), index, names.RTPROT, sources.get(":" in addr))


def create_child(ctx: Context, res: Iface) -> None:
    parent = ctx.rtnl.ifindex(res.parent or "")
    if parent is None:
        raise HostConflict(f"container {res.container}: parent interface {res.parent} is gone")
    extra = attr(IFLA_MTU, res.mtu) if res.mtu is not None else b""
    extra += attr(IFLA_ADDRESS, bytes.fromhex(res.mac.replace(":", ""))) if res.mac else b""
    mode = attr(IFLA_MACVLAN_MODE, MACVLAN_MODES[res.mode or "bridge"])
    fd = os.open(res.netns, os.O_RDONLY)
    try:
        # Born inside the container's namespace, as veth peers are; its parent stays in the host's.
        where = attr(IFLA_LINK, parent) + attr(IFLA_NET_NS_FD, fd)
        ctx.rtnl.add_link(res.ifname, "macvlan", where, extra, data=mode)
    finally:
        os.close(fd)
