"""The intent journal: the links and namespaces an apply is about to create, written before it creates them.

The kernel gives a new link or namespace no mark; the request after the one that creates it sets the
mark (a link's ifalias, a namespace's `lo` alias; the kernel ignores IFLA_IFALIAS in RTM_NEWLINK). A
crash in between would leave an object that no later run recognizes as ours, and that the next apply
refuses as foreign. So the names go to `SCOPE.intent` in the state directory first (one fsync per
apply), and the next run, under the lock, deletes every journaled object that exists without a mark.
Names are derived from the scope (`nr-…`, `nrv…`, /run/netns/CONTAINER) and checked free by the plan,
so an unmarked object of a journaled name is one of ours that a crash cut short.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from . import names, netns
from .diff import Action
from .model import Bridge, Iface, MacvlanShim, Netns, Vlan
from .observe import Observed
from .rtnl import NetlinkError, Rtnl
from .statedir import StateDir, write_json


class Journal:
    def __init__(self, state_dir: StateDir, scope: str) -> None:
        self.path = Path(state_dir.path) / f"{scope}.intent"

    def _read(self) -> dict[str, list[str]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return {k: list(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def note(self, actions: list[Action]) -> None:
        """Record what `actions` create, added to what is already recorded (a rollback adds its own)."""
        old = self._read()
        links, spaces, ns_links = (
            set(old.get("links", [])),
            set(old.get("netns", [])),
            set(old.get("ns_links", [])),
        )
        for action in actions:
            res = action.resource
            if action.op not in ("create", "replace"):
                continue
            if isinstance(res, Bridge | Vlan | MacvlanShim):
                links.add(res.ifname)
            elif isinstance(res, Iface) and res.host_ifname:
                links.add(res.host_ifname)  # deleting the host end of a veth deletes both ends
            elif isinstance(res, Iface):
                ns_links.add(f"{res.netns}/{res.ifname}")  # a macvlan child, born in its namespace
            elif isinstance(res, Netns) and not res.adopted:
                spaces.add(res.path)
        new = {"links": sorted(links), "netns": sorted(spaces), "ns_links": sorted(ns_links)}
        if new != {k: sorted(old.get(k, [])) for k in new}:
            write_json(self.path, new)

    def recover(self) -> list[str]:
        """Delete the journaled objects that exist unmarked; returns what was deleted."""
        entries = self._read()
        if not entries:
            return []
        removed = []
        with Rtnl() as rtnl:
            removed += [f"link {n}" for n in sorted(entries.get("links", [])) if _drop_unmarked(rtnl, n)]
        for entry in sorted(entries.get("ns_links", [])):
            path, ifname = entry.rsplit("/", 1)
            if netns.is_netns(path):
                with netns.rtnl_in(path) as ns:
                    if _drop_unmarked(ns, ifname):
                        removed.append(f"link {ifname} in {path}")
        for path in sorted(entries.get("netns", [])):
            if not os.path.lexists(path):
                continue
            if netns.is_netns(path):
                with netns.rtnl_in(path) as ns:
                    lo = ns.links("lo")
                    if lo and names.parse_mark(lo[0].alias) is not None:
                        continue
            # An unmarked namespace, or the empty file a crash before the mount leaves.
            netns.delete(path)
            removed.append(f"netns {path}")
        return removed

    def excuse(self, observed: Observed) -> None:
        """A dry run recovers nothing: the unmarked objects of journaled names, which the apply's
        recovery deletes first, are no foreign objects to refuse (the plan creates them anew)."""
        entries = self._read()
        observed.foreign_links -= set(entries.get("links", []))
        observed.foreign_netns -= set(entries.get("netns", []))

    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _drop_unmarked(rtnl: Rtnl, ifname: str) -> bool:
    found = rtnl.links(ifname)
    if not found or names.parse_mark(found[0].alias) is not None:
        return False
    with contextlib.suppress(NetlinkError):  # gone meanwhile: nothing left to clean
        rtnl.del_link(found[0].index)
    return True
