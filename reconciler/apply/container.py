"""Containers: their namespaces, veth pairs into network bridges, and default routes."""

from __future__ import annotations

import os

from .. import names, netns
from ..diff import Action
from ..model import Iface, Netns, Route
from .context import Context, missing_ok


def execute_netns(ctx: Context, action: Action) -> None:
    res = action.resource
    assert isinstance(res, Netns)
    if res.adopted:
        return  # someone else's namespace: we only ever add our interfaces to it
    if action.op == "delete":
        ctx.forget(res.path)
        netns.delete(res.path)
    elif action.op == "create":
        netns.create(res.path)
        ns = ctx.ns(res.path)
        ns.link("set", index=1, state="up", ifalias=names.mark(ctx.scope, "container", res.container))


def execute_iface(ctx: Context, action: Action) -> None:
    res = action.resource
    assert isinstance(res, Iface)
    if action.op == "delete":
        _delete_iface(ctx, res)
    elif action.op == "create":
        _create_iface(ctx, res)
    elif action.op == "change":
        _change_iface(ctx, res, action.fields)


def _create_iface(ctx: Context, res: Iface) -> None:
    master = ctx.ifindex(ctx.ipr, res.bridge) if res.bridge else None
    peer: dict[str, object] = {"ifname": res.ifname, "address": res.mac}
    if res.mtu is not None:
        peer["mtu"] = res.mtu
    fd = os.open(res.netns, os.O_RDONLY)
    try:
        peer["net_ns_fd"] = fd
        # The container end is born inside its namespace: no move, no rename (pyroute2's advice).
        ctx.ipr.link("add", ifname=res.host_ifname, kind="veth", peer=peer)
    finally:
        os.close(fd)
    host_index = ctx.ifindex(ctx.ipr, res.host_ifname)
    assert host_index is not None
    extra: dict[str, object] = {"mtu": res.mtu} if res.mtu is not None else {}
    ctx.ipr.link(
        "set",
        index=host_index,
        ifalias=names.mark(ctx.scope, "veth", res.id),
        master=master or 0,
        state="up",
        **extra,
    )
    ns = ctx.ns(res.netns)
    index = ctx.ifindex(ns, res.ifname)
    assert index is not None
    ns.link("set", index=index, ifalias=names.mark(ctx.scope, "iface", res.id), state="up")
    if res.address:
        addr, prefixlen = res.address.split("/")
        ns.addr("add", index=index, address=addr, prefixlen=int(prefixlen))


def _change_iface(ctx: Context, res: Iface, fields: tuple[str, ...]) -> None:
    ns = ctx.ns(res.netns)
    index = ctx.ifindex(ns, res.ifname)
    host_index = ctx.ifindex(ctx.ipr, res.host_ifname)
    assert index is not None and host_index is not None
    if "mac" in fields and res.mac:
        ns.link("set", index=index, address=res.mac)
    if "mtu" in fields and res.mtu is not None:
        ctx.ipr.link("set", index=host_index, mtu=res.mtu)
        ns.link("set", index=index, mtu=res.mtu)
    if "bridge" in fields:
        master = ctx.ifindex(ctx.ipr, res.bridge) if res.bridge else None
        ctx.ipr.link("set", index=host_index, master=master or 0)
    if "address" in fields:
        ns.flush_addr(index=index, family=2)
        if res.address:
            addr, prefixlen = res.address.split("/")
            ns.addr("add", index=index, address=addr, prefixlen=int(prefixlen))
    if "up" in fields:
        ctx.ipr.link("set", index=host_index, state="up")
        ns.link("set", index=index, state="up")


def _delete_iface(ctx: Context, old: Iface) -> None:
    # Deleting either end of a veth deletes both.
    if old.host_ifname:
        index = ctx.ifindex(ctx.ipr, old.host_ifname)
        if index is not None:
            with missing_ok():
                ctx.ipr.link("del", index=index)
            return
    if old.ifname and netns.is_netns(old.netns):
        ns = ctx.ns(old.netns)
        index = ctx.ifindex(ns, old.ifname)
        if index is not None:
            with missing_ok():
                ns.link("del", index=index)


def execute_route(ctx: Context, action: Action) -> None:
    res = action.resource
    assert isinstance(res, Route)
    if action.op == "delete":
        if netns.is_netns(res.netns):
            with missing_ok():
                ctx.ns(res.netns).route("del", dst="0.0.0.0/0", gateway=res.gateway)
        return
    ns = ctx.ns(res.netns)
    index = ctx.ifindex(ns, res.dev)
    assert index is not None
    ns.route("replace", dst="0.0.0.0/0", gateway=res.gateway, oif=index, proto=names.RTPROT)
