"""Macvlan parents: refuse, before anything changes, a spec whose parent interface cannot be used here.

A plain parent must exist (it is the host's, never created or changed by us). A parent named
`BASE.VID` that does not exist is created as an 802.1Q sub-interface on BASE, which needs the kernel's
8021q support: probed by creating one on a veth in a throwaway namespace, not guessed from /sys.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable, Mapping

from ... import netns
from ...model import Bridge, State, Vlan
from ...rtnl import IFLA_IFNAME, IFLA_LINK, IFLA_VLAN_ID, NetlinkError, attr
from ...spec import Spec


def parent_problems(
    spec: Spec, desired: State, observed: State, foreign_links: set[str], vlan_supported: Callable[[], bool]
) -> list[str]:
    ours = {r.ifname for r in observed.resources.values() if isinstance(r, (Bridge, Vlan))}
    existing = foreign_links | ours
    out: list[str] = []
    supported: bool | None = None  # probed once, and only when a VLAN must be created
    for name, net in spec.networks.items():
        if net.driver != "macvlan" or net.parent is None:
            continue
        vlan = desired.resources.get(("vlan", net.parent))
        if net.parent in existing:
            continue
        if not isinstance(vlan, Vlan):
            out.append(f"network {name}: parent interface {net.parent} does not exist on this host")
        elif vlan.base not in existing:
            out.append(
                f"network {name}: parent {net.parent} would be VLAN {vlan.vid} on {vlan.base}, "
                "which does not exist on this host"
            )
        elif not observed.resources.get(vlan.key):
            if supported is None:
                supported = vlan_supported()
            if not supported:
                out.append(
                    f"network {name}: parent {net.parent} is an 802.1Q VLAN sub-interface, and this kernel "
                    "lacks 802.1Q VLAN support (module 8021q); load 8021q or create the interface yourself"
                )
    return out


def parent_mtus(spec: Spec, link_mtus: Mapping[str, int]) -> Spec:
    """A macvlan network without `mtu` has its parent's MTU (a VLAN parent still to be created: its
    base's), as a fresh apply gives it. Set, not left to the kernel: a child keeps an MTU an earlier
    spec gave it, and follows its parent's changes only downwards."""
    networks = dict(spec.networks)
    for name, net in spec.networks.items():
        if net.driver != "macvlan" or net.mtu is not None or net.parent is None:
            continue
        vlan = net.vlan()
        mtu = link_mtus.get(net.parent) or (link_mtus.get(vlan[0]) if vlan else None)
        if mtu:
            networks[name] = net.model_copy(update={"mtu": mtu})
    return spec.model_copy(update={"networks": networks})


def vlan_supported() -> bool:
    """Whether this kernel can create 802.1Q VLAN links (8021q built in, loaded or loadable)."""
    with netns.scratch() as sock:
        sock.add_veth("probe0", attr(IFLA_IFNAME, "probe1"))
        parent = attr(IFLA_LINK, sock.ifindex("probe0") or 0)
        try:
            sock.add_link("probe0.1", "vlan", parent, data=attr(IFLA_VLAN_ID, struct.pack("=H", 1)))
        except NetlinkError as e:
            if e.code == errno.EOPNOTSUPP:  # "Unknown device type": no vlan link kind
                return False
            raise
    return True
