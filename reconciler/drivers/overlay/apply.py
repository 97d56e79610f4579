"""Executors for overlay objects: VXLAN devices, static FDB entries and permanent neighbours."""

from __future__ import annotations

from ... import names
from ...apply.context import Context, missing_ok
from ...diff import Action
from ...rtnl import IFLA_IFALIAS, IFLA_MASTER, IFLA_MTU, attr
from .model import Fdb, Neigh, Vxlan
from .netlink import delete_fdb, delete_neigh, replace_fdb, replace_neigh, vxlan_info


def execute_vxlan(ctx: Context, action: Action) -> None:
    res = action.resource
    assert isinstance(res, Vxlan)
    sock = ctx.rtnl
    if action.op == "delete":
        index = sock.ifindex(res.ifname)
        if index is not None:
            with missing_ok():
                sock.del_link(index)  # its FDB and neighbour entries go with it
        return
    fields = action.fields if action.op == "change" else None
    if action.op == "create":
        sock.add_link(
            res.ifname, "vxlan", data=vxlan_info(res.vni, res.local, res.port, res.learning, res.proxy)
        )
    index = sock.ifindex(res.ifname)
    assert index is not None
    settings: list[bytes] = []
    if fields is None:
        settings.append(attr(IFLA_IFALIAS, names.mark(ctx.scope, "vxlan", res.network)))
    if res.mtu is not None and (fields is None or "mtu" in fields):
        settings.append(attr(IFLA_MTU, res.mtu))
    if fields is None or "bridge" in fields:
        master = sock.ifindex(res.bridge) if res.bridge else None
        settings.append(attr(IFLA_MASTER, master or 0))
    up = res.up if fields is None or "up" in fields else None
    sock.set_link(index, *settings, up=up)


def execute_fdb(ctx: Context, action: Action) -> None:
    res = action.resource
    assert isinstance(res, Fdb)
    index = ctx.rtnl.ifindex(res.dev)
    if action.op == "delete":
        if index is not None:
            with missing_ok():
                delete_fdb(ctx.rtnl, index, res.mac, res.dst)
        return
    assert index is not None
    replace_fdb(ctx.rtnl, index, res.mac, res.dst)


def execute_neigh(ctx: Context, action: Action) -> None:
    res = action.resource
    assert isinstance(res, Neigh)
    index = ctx.rtnl.ifindex(res.dev)
    if action.op == "delete":
        if index is not None:
            with missing_ok():
                delete_neigh(ctx.rtnl, index, res.ip)
        return
    assert index is not None
    replace_neigh(ctx.rtnl, index, res.ip, res.mac)
