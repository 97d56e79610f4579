"""Cluster-wide IPAM for overlay networks: the same address for every endpoint on every host.

There is no runtime coordination: every host computes the allocation from the spec and the lock file
(`SPEC.lock`, committed beside the spec). Precedence for an endpoint's address: the spec's static
address, then its locked address, then a free address found by hashing its name (so that two people
locking the same spec get the same file). `lock` keeps every locked address that is still wanted,
which is the guarantee: adding or removing an endpoint never moves another one. Without a lock the
hashed addresses are deterministic too, but a hash collision can depend on which endpoints exist.

Endpoints of an overlay network: its containers, its services' VIPs, and one node address per host
(the host's own address on the overlay, used as the source of load-balanced connections).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import HostConflict, ReconcilerError
from ..bridge.desired import gateway
from .clusterspec import host_names, overlay_networks, scope_name

if TYPE_CHECKING:
    from ...spec import IP, Net, Spec

IPv4 = ipaddress.IPv4Address
GROUPS = ("containers", "services", "hosts")
# The same endpoints' IPv6 addresses, on a network with an IPv6 subnet.
GROUPS6 = ("containers6", "services6", "hosts6")
LOCK_VERSION = 1


@dataclass
class OverlayAllocation:
    subnet: str  # "" on an IPv6-only network
    containers: dict[str, str] = field(default_factory=dict)
    services: dict[str, str] = field(default_factory=dict)
    hosts: dict[str, str] = field(default_factory=dict)
    subnet6: str = ""  # "" on a network without IPv6
    containers6: dict[str, str] = field(default_factory=dict)
    services6: dict[str, str] = field(default_factory=dict)
    hosts6: dict[str, str] = field(default_factory=dict)

    def group(self, name: str) -> dict[str, str]:
        found: dict[str, str] = getattr(self, name)
        return found

    def families(self) -> list[tuple[str, tuple[str, ...]]]:
        """(subnet, its groups) of each family the network has, IPv4 first."""
        return [(s, g) for s, g in ((self.subnet, GROUPS), (self.subnet6, GROUPS6)) if s]


Allocation = dict[str, OverlayAllocation]


def lock_path(spec_path: str | os.PathLike[str]) -> Path:
    """Where `reconciler lock` writes: SPEC.lock beside a file, `spec.lock` inside a directory of specs
    (so it lives in the same git checkout)."""
    path = Path(spec_path)
    return path / "spec.lock" if path.is_dir() else Path(f"{spec_path}.lock")


def lock_files(spec_path: str | os.PathLike[str]) -> list[Path]:
    """The lock files a spec path reads: SPEC.lock for a file, every `*.lock` of a directory (one per
    spec file, say, each written by `reconciler lock FILE`)."""
    path = Path(spec_path)
    if not path.is_dir():
        return [lock_path(path)]
    return sorted(f for f in path.glob("*.lock") if not f.name.startswith(".") and f.is_file())


def read_locks(spec_path: str | os.PathLike[str]) -> Allocation | None:
    """The allocation of every lock file of a spec path, or None when there is none."""
    merged: Allocation | None = None
    origin: dict[str, Path] = {}
    for file in lock_files(spec_path):
        lock = read_lock(file)
        if lock is None:
            continue
        merged = merged or {}
        for network, alloc in lock.items():
            if network in origin:
                raise ReconcilerError(f"lock files {origin[network]} and {file} both pin network {network}")
            merged[network], origin[network] = alloc, file
    return merged


def pinned(spec_path: str | os.PathLike[str], spec: Spec) -> tuple[Allocation | None, str | None]:
    """The lock for applying SPEC, and a warning when it does not pin the spec's overlay addresses."""
    lock = read_locks(spec_path)
    if not overlay_networks(spec):
        return lock, None
    where = " and ".join(str(f) for f in lock_files(spec_path)) or f"{spec_path}/*.lock"
    if lock is None:
        return None, (
            f"{where} not found: overlay addresses are derived from names, the same on every host, "
            "but not pinned (a later change can move one); run `reconciler lock` and commit the lock"
        )
    if problems := staleness(spec, lock):
        return lock, f"{where} is stale ({problems[0]}); run `reconciler lock`"
    return lock, None


def wanted(spec: Spec, network: str) -> dict[str, list[str]]:
    """The endpoints of an overlay network, per group, in spec order."""
    return {
        "containers": [c for c, ctr in spec.containers.items() if network in ctr.attachments()],
        "services": [s for s, svc in spec.services.items() if svc.network == network],
        "hosts": host_names(spec),
    }


def allocate(spec: Spec, lock: Allocation | None) -> Allocation:
    return {n: _allocate_network(spec, n, (lock or {}).get(n)) for n in overlay_networks(spec)}


def _allocate_network(spec: Spec, name: str, locked: OverlayAllocation | None) -> OverlayAllocation:
    net = spec.networks[name]
    out = OverlayAllocation("")
    for subnet, groups in ((net.subnet, GROUPS), (net.subnet6, GROUPS6)):
        if subnet is None:
            continue
        key = "subnet" if subnet.version == 4 else "subnet6"
        old = None
        # A new subnet voids every old address of its family.
        if locked is not None and getattr(locked, key) == str(subnet):
            old = {g: locked.group(g6) for g, g6 in zip(GROUPS, groups, strict=True)}
        setattr(out, key, str(subnet))
        found = _allocate_family(spec, name, subnet, old)
        for g, g6 in zip(GROUPS, groups, strict=True):
            out.group(g6).update(found[g])
    return out


def _allocate_family(
    spec: Spec, name: str, subnet: Net, locked: dict[str, dict[str, str]] | None
) -> dict[str, dict[str, str]]:
    """The addresses of one family, per group (`GROUPS`), from the spec, the family's `locked` ones
    and hashing."""
    net = spec.networks[name]
    members = wanted(spec, name)
    # A locked address outside an ip_range added since moves into it, as a first allocation would.
    pool = (net.ip_range if subnet.version == 4 else net.ip_range6) or subnet
    result: dict[tuple[str, str], IP] = {}
    gw = gateway(net, subnet)
    used: set[IP] = {gw} if gw is not None else set()
    for c in members["containers"]:
        att = spec.containers[c].attachments()[name]
        static = att.ipv4_address if subnet.version == 4 else att.ipv6_address
        if static is not None:
            result[("containers", c)] = static
            used.add(static)
    if locked is not None:
        for group, names_ in members.items():
            for n in names_:
                old = locked[group].get(n)
                if (group, n) not in result and old is not None:
                    addr = ipaddress.ip_address(old)
                    if addr in pool and addr not in used and _usable(addr, subnet):
                        result[(group, n)] = addr
                        used.add(addr)
    taken = {int(a) for a in used} | {int(a) for a in _reserved(subnet)}
    # Sorted, so the outcome does not depend on the order endpoints are written in the spec.
    for group, n in sorted((g, n) for g, ns in members.items() for n in ns if (g, n) not in result):
        found = _hashed_free(pool, taken, f"{scope_name(spec)}/{name}/{group}/{n}")
        if found is None:
            raise HostConflict(f"overlay network {name}: no free address left in {pool} for {n}")
        result[(group, n)] = found
        taken.add(int(found))
    return {group: {n: str(result[(group, n)]) for n in names_} for group, names_ in members.items()}


def _reserved(subnet: Net) -> tuple[IP, ...]:
    """IPv4's network and broadcast addresses; IPv6's subnet-router anycast address."""
    if subnet.version == 6:
        return (subnet.network_address,)
    return (subnet.network_address, subnet.broadcast_address)


def _usable(addr: IP, subnet: Net) -> bool:
    return addr not in _reserved(subnet)


def _hashed_free(pool: Net, taken: set[int], key: str) -> IP | None:
    """The first free address of the pool from a slot hashed from `key` on (integers: a /16 pool
    as address objects costs most of a second)."""
    first, size = int(pool.network_address), pool.num_addresses
    start = int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) % size
    for i in range(min(size, len(taken) + 1)):  # a free one is among the first len(taken) + 1
        addr = first + (start + i) % size
        if addr not in taken:
            return ipaddress.ip_address(addr) if pool.version == 4 else ipaddress.IPv6Address(addr)
    return None


def to_json(alloc: Allocation) -> str:
    body = {"version": LOCK_VERSION, "networks": {n: _network_json(a) for n, a in sorted(alloc.items())}}
    return json.dumps(body, indent=2) + "\n"


def _network_json(a: OverlayAllocation) -> dict[str, Any]:
    """The keys of each family the network has: an IPv4-only network's lock reads as before IPv6."""
    out: dict[str, Any] = {}
    for key, groups in (("subnet", GROUPS), ("subnet6", GROUPS6)):
        if getattr(a, key):
            out[key] = getattr(a, key)
            out.update({g: dict(sorted(a.group(g).items())) for g in groups})
    return out


def read_lock(path: Path) -> Allocation | None:
    """The lock's allocation, or None when there is no lock file."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ReconcilerError(f"lock file {path} is unreadable: {e}") from e
    try:
        if data["version"] != LOCK_VERSION:
            raise ReconcilerError(f"lock file {path}: unsupported version {data['version']!r}")
        return {n: _read_network(body) for n, body in data["networks"].items()}
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise ReconcilerError(f"lock file {path} is malformed ({e}): run `reconciler lock` again") from e


def _read_network(body: dict[str, Any]) -> OverlayAllocation:
    if "subnet" not in body and "subnet6" not in body:
        raise KeyError("subnet")
    out = OverlayAllocation("")
    for key, groups, parse, net in (
        ("subnet", GROUPS, IPv4, ipaddress.IPv4Network),
        ("subnet6", GROUPS6, ipaddress.IPv6Address, ipaddress.IPv6Network),
    ):
        if key in body:
            setattr(out, key, str(net(body[key])))
            for g in groups:
                out.group(g).update({str(k): str(parse(v)) for k, v in body.get(g, {}).items()})
    return out


def staleness(spec: Spec, lock: Allocation | None) -> list[str]:
    """Why the lock does not pin the spec's allocation (empty: it does)."""
    if lock is None:
        return ["the lock file is missing"]
    fresh = allocate(spec, lock)
    out: list[str] = []
    for n in sorted(set(fresh) | set(lock)):
        new, old = fresh.get(n), lock.get(n)
        if new is None:
            out.append(f"network {n} is no longer an overlay of the spec")
            continue
        if old is None:
            out.append(f"network {n} has no locked addresses")
            continue
        for key in ("subnet", "subnet6"):
            if getattr(new, key) != getattr(old, key):
                now, was = getattr(new, key) or "none", getattr(old, key) or "none"
                out.append(f"network {n}: {key} {now} is locked as {was}")
        for g in GROUPS + GROUPS6:
            mine, theirs = new.group(g), old.group(g)
            for endpoint in sorted(set(mine) | set(theirs)):
                if mine.get(endpoint) != theirs.get(endpoint):
                    was, now = theirs.get(endpoint, "unlocked"), mine.get(endpoint, "removed")
                    what = g[:-1] if g in GROUPS else f"{g[:-2]} (IPv6)"
                    out.append(f"network {n}: {what} {endpoint}: {was} -> {now}")
    return out
