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
from .model import Bridge, Iface, MacvlanShim, Netns, Resource, Vlan
from .observe import Observed
from .rtnl import NetlinkError, Rtnl
from .statedir import StateDir, write_json

KINDS = ("links", "netns", "ns_links")


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
        new = {kind: set(old.get(kind, [])) for kind in KINDS}
        for action in actions:
            entry = _entry(action.resource) if action.op in ("create", "replace") else None
            if entry is not None:
                new[entry[0]].add(entry[1])
        self._write(old, new)

    def forget(self, resource: Resource) -> None:
        """Drop `resource`'s name: its create found the place taken (EEXIST), so an unmarked object
        there is someone else's, which a recovery must not delete."""
        entry = _entry(resource)
        old = self._read()
        if entry is not None and entry[1] in old.get(entry[0], []):
            self._write(
                old, {k: set(old.get(k, [])) - ({entry[1]} if k == entry[0] else set()) for k in KINDS}
            )

    def _write(self, old: dict[str, list[str]], new: dict[str, set[str]]) -> None:
        out = {k: sorted(v) for k, v in new.items()}
        if out != {k: sorted(old.get(k, [])) for k in KINDS}:
            write_json(self.path, out)

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


def _entry(res: Resource) -> tuple[str, str] | None:
    """Where a created object's name is journaled (KINDS), and the name; None for an unjournaled kind."""
    if isinstance(res, Bridge | Vlan | MacvlanShim):
        return "links", res.ifname
    if isinstance(res, Iface) and res.host_ifname:
        return "links", res.host_ifname  # deleting the host end of a veth deletes both ends
    if isinstance(res, Iface):
        return "ns_links", f"{res.netns}/{res.ifname}"  # a macvlan child, born in its namespace
    if isinstance(res, Netns) and not res.adopted:
        return "netns", res.path
    return None


def _drop_unmarked(rtnl: Rtnl, ifname: str) -> bool:
    found = rtnl.links(ifname)
    if not found or names.parse_mark(found[0].alias) is not None:
        return False
    with contextlib.suppress(NetlinkError):  # gone meanwhile: nothing left to clean
        rtnl.del_link(found[0].index)
    return True
