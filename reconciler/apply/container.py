"""Containers: their namespaces, veth pairs into network bridges or a driver's children of a host link,
default routes."""

from __future__ import annotations

import os

from .. import names, netns
from ..diff import Action
from ..drivers.registry import CHILD_MODES
from ..model import Iface, Netns, Route
from ..rtnl import (
    IFLA_ADDRESS,
    IFLA_IFALIAS,
    IFLA_IFNAME,
    IFLA_MASTER,
    IFLA_MTU,
    IFLA_NET_NS_FD,
    Rtnl,
    attr,
)
from .context import Context, missing_ok


def execute_netns(ctx: Context, action: Action) -> None:
    res = action.resource
    assert isinstance(res, Netns)
    if res.adopted:
        return  # someone else's namespace: we only ever add our interfaces to it
    if action.op == "delete":
        if res.path in ctx.in_use:
            # It lives on, now without our interfaces: unmarked, it is no longer ours should anyone
            # mount it again (`ip netns attach`).
            ctx.rns(res.path).set_link(1, attr(IFLA_IFALIAS, b""))
        ctx.forget(res.path)
        netns.delete(res.path)
    elif action.op == "create":
        netns.create(res.path, QUIET_IPV6_DEFAULTS if IPV6_KERNEL else None)
        ctx.quiet_netns.add(res.path)
        mark = names.mark(ctx.scope, "container", res.container)
        ctx.rns(res.path).set_link(1, attr(IFLA_IFALIAS, mark), up=True)


def execute_iface(ctx: Context, action: Action) -> None:
    res = action.resource
    assert isinstance(res, Iface)
    if action.op == "delete":
        _delete_iface(ctx, res)
    elif action.op == "create":
        _create_iface(ctx, res)
    elif action.op == "change":
        _change_iface(ctx, res, action.fields)


def _mac(mac: str) -> bytes:
    return attr(IFLA_ADDRESS, bytes.fromhex(mac.replace(":", "")))


def _create_iface(ctx: Context, res: Iface) -> None:
    if res.parent:
        CHILD_MODES[res.mode or ""].create_child(ctx, res)
    else:
        _create_veth(ctx, res)
    if res.address and ":" in res.address and res.netns not in ctx.quiet_netns:
        _quiet_ipv6(res)
    ns = ctx.rns(res.netns)
    ns.set_link(0, attr(IFLA_IFALIAS, names.mark(ctx.scope, "iface", res.id)), ifname=res.ifname, up=True)
    index = ns.ifindex(res.ifname)
    assert index is not None
    # Its routes, created next, go through it: no second lookup per route (a request each).
    ctx.created_ifaces[res.netns, res.ifname] = index
    if res.address:
        _add_addresses(ns, index, res.address)


# A namespace of ours has them as its defaults from its start: every interface born in it takes them
# (one thread per interface less at a cold apply). Also on IPv4-only networks: a container there
# could otherwise send router advertisements that give the others IPv6 addresses and routes
# (CVE-2020-13401 in Docker).
IPV6_KERNEL = os.path.isdir("/proc/sys/net/ipv6")  # not with ipv6.disable=1, where IPv4 still works
QUIET_IPV6_DEFAULTS = {f"net/ipv6/conf/default/{key}": "0" for key in ("accept_ra", "autoconf", "accept_dad")}


def _quiet_ipv6(res: Iface) -> None:
    """Before the interface comes up: no SLAAC and no router advertisements (another container on the
    bridge could send one), no duplicate detection, so its link-local address is never tentative. Our
    addresses, set with IFA_F_NODAD, are usable the moment apply returns."""
    conf = f"net/ipv6/conf/{res.ifname}"
    netns.write_sysctls(
        res.netns,
        {
            f"{conf}/accept_ra": "0",
            f"{conf}/autoconf": "0",
            f"{conf}/accept_dad": "0",
        },
    )


def _add_addresses(ns: Rtnl, index: int, cidrs: str) -> None:
    for cidr in cidrs.split(","):
        addr, prefixlen = cidr.split("/")
        ns.add_address(index, addr, int(prefixlen))


def _create_veth(ctx: Context, res: Iface) -> None:
    master = ctx.host_index(res.bridge) if res.bridge else None
    mtu = attr(IFLA_MTU, res.mtu) if res.mtu is not None else b""
    fd = os.open(res.netns, os.O_RDONLY)
    try:
        peer = attr(IFLA_IFNAME, res.ifname) + attr(IFLA_NET_NS_FD, fd) + mtu
        # The container end is born inside its namespace: no move, no rename (pyroute2's advice).
        ctx.rtnl.add_veth(res.host_ifname, peer + (_mac(res.mac) if res.mac else b""), mtu)
    finally:
        os.close(fd)
    ctx.rtnl.set_link(
        0,
        attr(IFLA_IFALIAS, names.mark(ctx.scope, "veth", res.id)),
        attr(IFLA_MASTER, master or 0),
        ifname=res.host_ifname,
        up=True,
    )


def _change_iface(ctx: Context, res: Iface, fields: tuple[str, ...]) -> None:
    ns = ctx.rns(res.netns)
    index = ns.ifindex(res.ifname)
    # A child of a host link has no host end.
    host_index = ctx.rtnl.ifindex(res.host_ifname) if res.host_ifname else None
    assert index is not None and (host_index is not None or res.parent)
    if "mac" in fields and res.mac:
        ns.set_link(index, _mac(res.mac))
    if "mtu" in fields and res.mtu is not None:
        if host_index is not None:
            ctx.rtnl.set_link(host_index, attr(IFLA_MTU, res.mtu))
        ns.set_link(index, attr(IFLA_MTU, res.mtu))
    if "bridge" in fields and host_index is not None:
        master = ctx.host_index(res.bridge) if res.bridge else None
        ctx.rtnl.set_link(host_index, attr(IFLA_MASTER, master or 0))
    if "address" in fields:
        ns.flush_addresses(index)
        if res.address:
            if ":" in res.address:
                _quiet_ipv6(res)
            _add_addresses(ns, index, res.address)
    if "up" in fields:
        if host_index is not None:
            ctx.rtnl.set_link(host_index, up=True)
        ns.set_link(index, up=True)


def _delete_iface(ctx: Context, old: Iface) -> None:
    ctx.created_ifaces.pop((old.netns, old.ifname), None)
    # Deleting either end of a veth deletes both.
    if old.host_ifname:
        index = ctx.rtnl.ifindex(old.host_ifname)
        if index is not None:
            with missing_ok():
                ctx.rtnl.del_link(index)
            return
    if old.ifname and netns.is_netns(old.netns):
        ns = ctx.rns(old.netns)
        index = ns.ifindex(old.ifname)
        if index is not None:
            with missing_ok():
                ns.del_link(index)


def execute_route(ctx: Context, action: Action) -> None:
    res = action.resource
    assert isinstance(res, Route)
    if action.op == "delete":
        if netns.is_netns(res.netns):
            with missing_ok():
                ctx.rns(res.netns).del_default_route(res.gateway)
        return
    ns = ctx.rns(res.netns)
    index = ctx.created_ifaces.get((res.netns, res.dev)) or ns.ifindex(res.dev)
    assert index is not None
    ns.replace_default_route(res.gateway, index, names.RTPROT, onlink=res.onlink)
