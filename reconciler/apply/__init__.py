"""Executors: carry out a plan's actions in order; they decide nothing themselves."""

from __future__ import annotations

from collections.abc import Callable

from .. import progress
from ..diff import Action
from ..drivers.registry import DRIVERS
from ..model import KIND_RANK, Iface, Netns, Route
from . import container, firewall, hosts, sysctl
from .context import Context

EXECUTORS: dict[str, Callable[[Context, Action], None]] = {
    "sysctl": sysctl.execute,
    "netns": container.execute_netns,
    "iface": container.execute_iface,
    "route": container.execute_route,
    "hosts": hosts.execute,
    **{kind: run for driver in DRIVERS.values() for kind, run in driver.executors().items()},
}


def execute(ctx: Context, actions: list[Action]) -> None:
    """Netlink and file actions one by one, then all nftables actions in one transaction.

    A replacement runs in two halves: its removal with the deletions, before anything is created, so
    that a name it frees (eth0 moving to another network) is free when its new owner is created.

    Interfaces and routes inside a namespace that is deleted for good are left to the kernel: it tears
    a namespace's veths down in one batch, where deleting them one by one costs a synchronize_net
    (~25 ms) each. It does so in the background, so the creations wait until those host ends are gone:
    a name they free may be taken again, and the apply only returns once the host shows its result."""
    nft_actions = [a for a in actions if a.resource.kind.startswith("nft-")]
    gone = {
        a.resource.path
        for a in actions
        if a.op == "delete" and isinstance(a.resource, Netns) and not a.resource.adopted
    }
    removals = sorted(
        (a for a in actions if a.op in ("delete", "replace") and not _goes_with(a, gone)),
        key=lambda a: -KIND_RANK[a.resource.kind],
    )
    progress.start(len(removals) + sum(a.op != "delete" for a in actions))
    for action in removals:
        old = action.before if action.op == "replace" and action.before else action.resource
        _run(ctx, Action("delete", old))
    dying = {
        a.resource.host_ifname
        for a in actions
        if _goes_with(a, gone) and isinstance(a.resource, Iface) and a.resource.parent is None
    }
    if dying:
        progress.phase(f"waiting for the kernel to remove {len(dying)} veths")
        ctx.wait_gone(dying)
    for action in actions:
        if action.op != "delete":
            _run(ctx, action if action.op == "change" else Action("create", action.resource))
    if nft_actions:
        progress.phase(f"nftables: {len(nft_actions)} changes in one transaction")
    firewall.execute(ctx, nft_actions)


def _goes_with(action: Action, gone: set[str]) -> bool:
    res = action.resource
    return action.op == "delete" and isinstance(res, Iface | Route) and res.netns in gone


def _run(ctx: Context, action: Action) -> None:
    progress.advance(f"{action.op} {action.resource.kind} {action.resource.id}")
    run = EXECUTORS.get(action.resource.kind)
    if run is not None:
        run(ctx, action)
