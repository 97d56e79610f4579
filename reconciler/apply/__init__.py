"""Executors: carry out a plan's actions in order; they decide nothing themselves."""

from __future__ import annotations

from collections.abc import Callable

from ..diff import Action
from . import bridge, container, firewall, hosts, sysctl
from .context import Context

EXECUTORS: dict[str, Callable[[Context, Action], None]] = {
    "sysctl": sysctl.execute,
    "bridge": bridge.execute,
    "netns": container.execute_netns,
    "iface": container.execute_iface,
    "route": container.execute_route,
    "hosts": hosts.execute,
}


def execute(ctx: Context, actions: list[Action]) -> None:
    """Netlink and file actions one by one, then all nftables actions in one transaction."""
    nft_actions = [a for a in actions if a.resource.kind.startswith("nft-")]
    for action in actions:
        run = EXECUTORS.get(action.resource.kind)
        if run is not None:
            run(ctx, action)
    firewall.execute(ctx, nft_actions)
