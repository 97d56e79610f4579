"""The store's endpoints -> the static overlay design's input: a whole-cluster spec and its allocation.

The overlay driver already builds everything from a cluster spec (`hosts:`, containers with `host:`)
and an allocation (what `SPEC.lock` holds): FDB and neighbour entries for remote endpoints, hosts
files with every name on an overlay, service backends anywhere. In etcd mode both come from the
store instead of a file: the live hosts' registrations become `hosts:`, the other hosts' containers
become containers placed on their hosts, and every address comes from the store's IPAM keys. So the
pure plan diffs remote endpoints as FDB, neighbour, hosts-file and nft element changes only.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from ..drivers.overlay.clusteripam import Allocation, OverlayAllocation
from ..drivers.overlay.clusterspec import overlay_networks
from ..errors import HostConflict, ReconcilerError
from ..spec import Attachment, ClusterHost, Container, Spec
from .model import Endpoint, HostRecord, View


class StoreWaiting(ReconcilerError):
    """The store has never been read (or holds nothing of this host): nothing can be built yet."""


@dataclass
class Resolved:
    spec: Spec  # the cluster as this host sees it (hosts:, every container placed)
    allocation: Allocation
    waiting: list[str] = field(default_factory=list)  # local endpoints with no address yet
    missing: list[str] = field(default_factory=list)  # service backends that exist nowhere


def resolve(local: Spec, view: View, me: str) -> Resolved:
    nets = overlay_networks(local)
    endpoints = [ep for ep in view.endpoints() if ep.network in nets]
    by_owner = {(ep.kind, ep.name, ep.network): ep for ep in endpoints}
    hosts = _hosts(view, nets, by_owner, me)
    out = Resolved(local, {n: OverlayAllocation(str(local.networks[n].subnet)) for n in nets})
    containers: dict[str, Container] = {}
    for c, ctr in local.containers.items():
        lacking = [n for n in ctr.attachments() if n in nets and ("container", c, n) not in by_owner]
        if lacking:
            out.waiting.append(f"container {c} (on {', '.join(lacking)})")
            continue
        containers[c] = ctr.model_copy(update={"host": me})
    remote: dict[tuple[str, str], list[tuple[str, tuple[str, ...]]]] = {}
    for ep in endpoints:
        if ep.kind == "container" and ep.host != me and ep.host in hosts and ep.name not in local.containers:
            remote.setdefault((ep.name, ep.host), []).append((ep.network, ep.aliases))
    for (name, host), attachments in remote.items():
        containers[name] = _remote(host, tuple(sorted(attachments)))
    for ep in endpoints:
        alloc = out.allocation[ep.network]
        if ep.kind == "container" and ep.name in containers and containers[ep.name].host == ep.host:
            alloc.containers[ep.name] = ep.address
        elif ep.kind == "node" and ep.name in hosts:
            alloc.hosts[ep.name] = ep.address
    services = {}
    for s, svc in local.services.items():
        vip = by_owner.get(("service", s, svc.network))
        backends = [b for b in svc.backends if b in containers and svc.network in containers[b].attachments()]
        out.missing += [f"service {s}: backend {b}" for b in svc.backends if b not in backends]
        if vip is None:
            out.waiting.append(f"service {s}")
        elif backends:
            services[s] = svc.model_copy(update={"backends": backends})
            out.allocation[svc.network].services[s] = vip.address
    out.spec = local.model_copy(
        update={"cluster": None, "hosts": hosts, "containers": containers, "services": services}
    )
    return out


def _hosts(
    view: View, nets: list[str], by_owner: dict[tuple[str, str, str], Endpoint], me: str
) -> dict[str, ClusterHost]:
    """The hosts with a node address on every overlay of ours: their endpoints can be programmed."""
    out = {}
    records = view.hosts()
    holders = _key_holders(view, records)
    for host, record in records.items():
        holder = holders.get(record.public_key) if record.public_key else host
        if holder != host:
            if host == me:
                raise HostConflict(
                    f"host {me}'s WireGuard public key {record.public_key} is registered by host {holder} "
                    "too: each host needs a key of its own (a copied key file? `reconciler keygen` here "
                    "makes a new one); nothing was changed"
                )
            continue  # a peer WireGuard could not tell from the first holder of its key
        if all(("node", host, n) in by_owner for n in nets):
            out[host] = ClusterHost(address=record.address, public_key=record.public_key)  # type: ignore[arg-type]
    if me not in out:
        raise StoreWaiting(f"host {me} has no node address in the store yet: nothing to build on")
    return out


def _key_holders(view: View, records: dict[str, HostRecord]) -> dict[str, str]:
    """Public key -> the host that registered it first (every host picks the same one)."""
    out: dict[str, str] = {}
    for host in sorted(records, key=lambda h: (view.entries[view.keys.host(h)].create_revision, h)):
        key = records[host].public_key
        if key is not None:
            out.setdefault(key, host)
    return out


@functools.lru_cache(maxsize=1 << 16)
def _remote(host: str, attachments: tuple[tuple[str, tuple[str, ...]], ...]) -> Container:
    """Another host's container, on the networks the store lists for it. Built once per content:
    every reconcile places every remote container (10,000 at scale), and models are immutable."""
    networks: dict[str, Attachment | None] = {n: Attachment(aliases=list(a)) for n, a in attachments}
    return Container(networks=networks, host=host)
