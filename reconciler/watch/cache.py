"""The daemon's memory of the host: the observed state kept between reconciles, refreshed in parts.

A full observe reads every container namespace (about 3 s at 1,000 containers), too slow for every spec
edit. The daemon keeps the last observed state. A spec edit alone is planned from memory for just the
part it reaches (`session.narrow`). A drift hint, or an edit `session.reach` cannot narrow (networks
changed, a macvlan or overlay network), re-reads host-level objects (one dump each), our nft tables,
the hosts files and the namespaces of the containers that may have changed; everything else comes
from memory. After an apply the memory is advanced by what was applied (`session.advance`, as
knftables remembers what it committed), and any failure, a change by someone else (another
`reconciler apply`) or the periodic resync falls back to a full observe.
"""

from __future__ import annotations

from collections.abc import Iterable

from .. import names
from ..drivers.overlay.model import Fdb, Neigh
from ..model import Resource, State, container_of
from ..observe import Observed
from ..spec import Spec

# Kinds read from container namespaces; every other kind is re-read on each reconcile.
NAMESPACE_KINDS = ("netns", "iface", "route", "ns-policy")  # ns-policy: a macvlan container's policy table


def entry_of(res: Resource) -> str | None:
    """An overlay FDB or neighbour entry's key as drift events name it ("fdb/MAC", "neigh/IP")."""
    if isinstance(res, Fdb):
        return f"fdb/{res.mac.lower()}"
    return f"neigh/{res.ip}" if isinstance(res, Neigh) else None


def changed_containers(old: Spec | None, new: Spec) -> set[str] | None:
    """Containers whose kernel objects a spec edit may change; None when anything may (no old spec,
    or another scope)."""
    if old is None or old.name != new.name:
        return None
    out = {
        c
        for c in old.containers.keys() | new.containers.keys()
        if old.containers.get(c) != new.containers.get(c)
    }
    nets = {
        n for n in old.networks.keys() | new.networks.keys() if old.networks.get(n) != new.networks.get(n)
    }
    for spec in (old, new):
        out.update(c for c, ctr in spec.containers.items() if nets & set(ctr.attachments()))
    return out


def desired_changes(old: State | None, new: State) -> set[str]:
    """Containers with a namespace-level desired resource added, removed or changed."""
    before = old.resources if old is not None else {}
    out: set[str] = set()
    for key in before.keys() | new.resources.keys():
        a, b = before.get(key), new.resources.get(key)
        if a != b:
            out.update(c for r in (a, b) if r is not None and (c := container_of(r)) is not None)
    return out


def scanned_paths(containers: Iterable[str], adopted: dict[str, str]) -> set[str]:
    """The namespace paths a partial observe of `containers` reads (see observe's `containers`)."""
    wanted = set(containers)
    return {names.netns_path(c) for c in wanted} | {p for p, c in adopted.items() if c in wanted}


def merge(cache: Observed, fresh: Observed, containers: set[str], adopted: dict[str, str]) -> Observed:
    """`fresh` (host level plus `containers`' namespaces) over the cached namespaces of the others."""
    state = State(
        {
            key: res
            for key, res in cache.state.resources.items()
            if key[0] in NAMESPACE_KINDS and container_of(res) not in containers
        }
    )
    state.resources.update(fresh.state.resources)
    paths = scanned_paths(containers, adopted)
    return Observed(
        state=state,
        foreign_links=fresh.foreign_links,
        foreign_netns=(cache.foreign_netns - paths) | fresh.foreign_netns,
        foreign_hosts=fresh.foreign_hosts,
        missing_netns=(cache.missing_netns - paths) | fresh.missing_netns,
        host_prefixes=fresh.host_prefixes,
        link_mtus=fresh.link_mtus,
        interface_prefixes=fresh.interface_prefixes,
        other_ports=fresh.other_ports,
    )
