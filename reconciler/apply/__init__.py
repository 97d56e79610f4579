"""Executors: carry out a plan's actions in order; they decide nothing themselves."""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable

from .. import interrupt, nsusers, progress
from ..diff import Action
from ..drivers.registry import DRIVERS
from ..model import KIND_RANK, Iface, Netns, Route
from . import container, firewall, hosts, sysctl
from .context import Context


@functools.cache
def executors() -> dict[str, Callable[[Context, Action], None]]:
    """Built on first use, not at import: a driver's executors import this package's context, so a
    driver imported first would find its own module half-initialised."""
    return {
        "sysctl": sysctl.execute,
        "netns": container.execute_netns,
        "iface": container.execute_iface,
        "route": container.execute_route,
        "hosts": hosts.execute,
        **{kind: run for driver in DRIVERS.values() for kind, run in driver.executors().items()},
    }


def execute(ctx: Context, actions: list[Action]) -> None:
    """Netlink and file actions one by one, then all nftables actions in one transaction, then what
    drivers do only once it is committed (a bridge's route_localnet, safe once the chain guarding it is).

    A replacement runs in two halves: its removal with the deletions, before anything is created, so
    that a name it frees (eth0 moving to another network) is free when its new owner is created.

    Interfaces and routes inside a namespace that is deleted for good are left to the kernel: it tears
    a namespace's veths down in one batch, where deleting them one by one costs a synchronize_net
    (~25 ms) each. It does so in the background, so the creations wait until those host ends are gone:
    a name they free may be taken again, and the apply only returns once the host shows its result.
    A namespace that something else still holds (a container's processes) never goes: its interfaces
    are deleted one by one before it is unmounted, and its processes live on without our network."""
    nft_actions = [a for a in actions if a.resource.kind.startswith("nft-")]
    leaving = {
        a.resource.path: a.resource.container
        for a in actions
        if a.op == "delete" and isinstance(a.resource, Netns) and not a.resource.adopted
    }
    ctx.in_use = _still_used(ctx, leaving, actions)
    gone = set(leaving) - ctx.in_use
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
        interrupt.check()
        progress.phase(f"nftables: {len(nft_actions)} changes in one transaction")
    firewall.execute(ctx, nft_actions)
    for driver in DRIVERS.values():
        driver.after_firewall(actions)


def _still_used(ctx: Context, leaving: dict[str, str], actions: list[Action]) -> set[str]:
    """The namespaces among `leaving` (path -> container) that outlive their unmount, each noted.
    Open file descriptors are looked for only in those with a macvlan child: a leftover veth shows on
    the host and is deleted after the wait, a child in an unmounted namespace is out of reach."""
    children = {
        a.resource.netns
        for a in actions
        if a.op == "delete" and isinstance(a.resource, Iface) and a.resource.parent
    }
    found = nsusers.users(leaving, fds_of=children & leaving.keys())
    for path, users in sorted(found.items()):
        used = f"namespace still used by {users.describe()}"
        ctx.note(f"container {leaving[path]}: {used}; its interfaces were removed")
    return set(found)


def _goes_with(action: Action, gone: set[str]) -> bool:
    res = action.resource
    return action.op == "delete" and isinstance(res, Iface | Route) and res.netns in gone


def _run(ctx: Context, action: Action) -> None:
    interrupt.check()  # a signal received during the action before stops the apply here
    progress.advance(f"{action.op} {action.resource.kind} {action.resource.id}")
    run = executors().get(action.resource.kind)
    if run is None:
        return
    try:
        run(ctx, action)
    except OSError as e:
        if action.op != "delete" and e.errno == errno.EEXIST:
            raise Occupied(action, e) from e
        raise


class Occupied(OSError):
    """A create found its place taken (EEXIST): what holds it is not ours (rollback.py tells the
    journal so). The plan checks every place free, so only a change it did not see gets here."""

    def __init__(self, action: Action, cause: OSError) -> None:
        super().__init__(cause.errno, f"{action.resource.kind} {action.resource.id}: {cause.strerror}")
        self.action = action
