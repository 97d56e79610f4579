"""This host's part of the store: its registration under a lease, and the addresses it claims.

Claims are etcd transactions that create a key only if it is absent (`Version(key) == 0`): an address
key for every endpoint (so two hosts allocating at once can never get the same address: one of the
two creates fails and that host tries its next candidate), a name key per container (so a name runs
on one host), one definition key per host and overlay network (the oldest definition is the
cluster's: a host defining the network differently is refused). What a host no longer wants it
deletes; what a dead host held goes with its lease.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..drivers.bridge.desired import gateway
from ..drivers.overlay.clusterspec import overlay_networks, vni_of
from ..errors import HostConflict, Problem
from ..spec import ClusterStore, Spec
from .client import Client, Entry, b64, entry
from .model import Endpoint, HostRecord, Keys, View

# Creates per transaction: etcd refuses more than 128 operations in one (--max-txn-ops).
BATCH = 64


class StoreConflict(HostConflict):
    """What the store refuses of this host's spec, each problem at its spec path (the caller
    locates them in the spec's files)."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, p.path))}: {p.message}" for p in problems))
        self.conflicts = problems


@dataclass(frozen=True)
class Wanted:
    """One endpoint this host wants an address for."""

    kind: str
    name: str
    network: str
    static: str | None = None  # the spec's ipv4_address
    preferred: str | None = None  # the address it had (the state record's)
    aliases: tuple[str, ...] = ()


class Store:
    def __init__(
        self, config: ClusterStore, scope: str, host: str, vtep: str, public_key: str | None = None
    ) -> None:
        self.client = Client(config)
        self.public_key = public_key  # WireGuard's, registered for the peers of encrypted overlays
        self.keys = Keys.of(config.prefix, scope)
        self.ttl = config.ttl
        self.scope, self.host, self.vtep = scope, host, vtep
        self.lease = 0
        self.view = View(self.keys)
        # Owner (kind, name, network, host) -> its address key, over the view (one claim's lookups).
        self._index: dict[tuple[str, str, str, str], tuple[Entry, Endpoint]] = {}

    # Reading.
    def relist(self) -> View:
        entries, revision = self.client.range(self.keys.root)
        self.view = View(self.keys, {e.key: e for e in entries}, revision)
        return self.view

    # The lease and the registration.
    def register(self) -> None:
        """Keep (or get) this host's lease and its registration; a name registered from another
        address by a live host is refused."""
        if self.lease and self.client.keepalive(self.lease) > 0:
            return  # a rotated key file takes effect at the daemon's restart, with a new lease
        self.lease = self.client.grant(self.ttl)
        key, record = self.keys.host(self.host), HostRecord(self.vtep, self.public_key).to_json()
        created, held = self._create([(key, record)], self.lease)
        if created:
            return
        holder = HostRecord.from_json(held[key].value) if held.get(key) else None
        if holder is not None and holder.address != self.vtep:
            raise HostConflict(
                f"host name {self.host} is registered in the store from {holder.address}, not from "
                f"{self.vtep}: another machine uses this name (or wait {self.ttl} s for a dead one's "
                "registration to expire)"
            )
        # Our own registration from a run that ended: take it over.
        self.client.put(key, record, self.lease)

    # Claims.
    def claim(self, spec: Spec, previous: dict[tuple[str, str], str]) -> None:
        """Claim everything `spec` (this host's) needs, release what it no longer does; StoreConflict
        listing what is refused. `previous`: (network, container) -> the address it had."""
        self._index = {
            _owner(ep): (e, ep)
            for key, e in self.view.entries.items()
            if self.keys.split(key)[:1] == ["ipam"] and (ep := Endpoint.from_json(e.value))
        }
        problems = [*self._definitions(spec), *self._names(spec)]
        if problems:
            raise StoreConflict(problems)
        fresh = [w for w in wanted(spec, self.host, previous) if not self._keep_held(w)]
        batched = [w for w in fresh if w.kind != "service" and w.static is None]
        alone = [w for w in fresh if w not in batched]
        for want in [*alone, *self._claim_batch(spec, batched)]:
            problem = self._claim_address(spec, want)
            if problem is not None:
                problems.append(problem)
        self._release(spec)
        if problems:
            raise StoreConflict(problems)

    def _definitions(self, spec: Spec) -> list[Problem]:
        out = []
        for n in overlay_networks(spec):
            mine = definition(spec, n)
            key = self.keys.definition(n, self.host)
            held = self.view.entries.get(key)
            if held is None or json.loads(held.value) != mine:
                # Deleted and created again: a changed definition is the youngest, not the cluster's.
                self._delete(key)
                self._put(key, json.dumps(mine, sort_keys=True), self.lease)
            for key_, e in self._read_range(self.keys.root + f"networks/{n}/"):
                self.view.entries[key_] = e
            defs = self.view.definitions(n)
            _, host, theirs = defs[0]
            if host != self.host and theirs != mine:
                self._delete(key)
                out.append(_difference(n, host, theirs, mine))
        return out

    def _names(self, spec: Spec) -> list[Problem]:
        """Claim the name of every container on our overlays: all new ones in one transaction per
        BATCH; when one is held, one by one, to name who holds it."""
        value = json.dumps({"host": self.host})
        overlays = set(overlay_networks(spec))
        todo = []
        for c, ctr in spec.containers.items():
            held = self.view.entries.get(self.keys.name(c))
            if overlays & set(ctr.attachments()) and (
                held is None or held.value != value or held.lease != self.lease
            ):
                todo.append(c)
        fresh = [c for c in todo if self.keys.name(c) not in self.view.entries]
        for i in range(0, len(fresh), BATCH):
            part = fresh[i : i + BATCH]
            created, _ = self._create([(self.keys.name(c), value) for c in part], self.lease)
            if created:
                todo = [c for c in todo if c not in part]
        return [p for c in todo if (p := self._name(c, value)) is not None]

    def _name(self, c: str, value: str) -> Problem | None:
        key = self.keys.name(c)
        created, found = self._create([(key, value)], self.lease)
        if created:
            return None
        holder = json.loads(found[key].value)["host"] if found.get(key) else None
        if holder == self.host:
            self._rebind(found[key])
            return None
        return Problem(("containers", c), f"container {c} already runs on host {holder} (in the store)")

    def _keep_held(self, want: Wanted) -> bool:
        """Whether the endpoint keeps the address the store holds for it (moved onto this lease)."""
        mine = self._held(want)
        if mine is None:
            return False
        if want.static not in (None, mine[1].address):
            self._delete(mine[0].key)  # the spec now pins another address
            return False
        if mine[0].lease != self._lease_of(want) or mine[1] != self._endpoint(want, mine[1].address):
            self._rebind(mine[0], self._endpoint(want, mine[1].address).to_json())
        return True

    def _claim_batch(self, spec: Spec, wants: list[Wanted]) -> list[Wanted]:
        """New endpoints' first free candidates (as the view knows them), created BATCH at a time in
        one transaction each: a host starting with many containers costs a few transactions, not one
        per container. A batch that meets a taken address creates nothing; its endpoints are then
        claimed one by one (returned)."""
        chosen: list[tuple[str, str, Wanted]] = []
        picked: set[str] = set()
        left: list[Wanted] = []
        for want in wants:
            for address in self._candidates(spec, want):
                key = self.keys.address(want.network, address)
                if key not in self.view.entries and key not in picked:
                    chosen.append((key, address, want))
                    picked.add(key)
                    break
            else:
                left.append(want)
        for i in range(0, len(chosen), BATCH):
            part = chosen[i : i + BATCH]
            items = [(key, self._endpoint(want, address).to_json()) for key, address, want in part]
            created, _ = self._create(items, self.lease)
            if not created:
                left += [want for _, _, want in part]
        return left

    def _claim_address(self, spec: Spec, want: Wanted) -> Problem | None:
        for address in self._candidates(spec, want):
            key = self.keys.address(want.network, address)
            held = self.view.entries.get(key)
            if held is not None and want.static is None:
                continue
            value = self._endpoint(want, address).to_json()
            creates = [(key, value)]
            if want.kind == "service":
                creates.insert(
                    0, (self.keys.service(want.network, want.name), json.dumps({"address": address}))
                )
            created, found = self._create(creates, self._lease_of(want))
            if created:
                return None
            if want.kind == "service" and found.get(creates[0][0]):
                return None  # another host allocated the VIP meanwhile: it is in the view now
            theirs = Endpoint.from_json(found[key].value) if found.get(key) else None
            if theirs is not None and theirs.same_owner(self._endpoint(want, address)):
                self._rebind(found[key], value)
                return None
            if want.static is not None:
                who = "another endpoint" if theirs is None else _who(theirs)
                return Problem(
                    ("containers", want.name, "networks", want.network, "ipv4_address"),
                    f"{address} is already taken in the store by {who}",
                )
        return Problem(
            ("networks", want.network),
            f"no free address left on overlay network {want.network} for {want.kind} {want.name}",
        )

    def _held(self, want: Wanted) -> tuple[Entry, Endpoint] | None:
        """The address key the store holds for this endpoint (from an earlier claim or run)."""
        if want.kind == "service":
            e = self.view.entries.get(self.keys.service(want.network, want.name))
            if e is None:
                return None
            held = self.view.entries.get(self.keys.address(want.network, json.loads(e.value)["address"]))
            return (held, Endpoint.from_json(held.value)) if held is not None else None
        return self._index.get(_owner(self._endpoint(want, "0.0.0.0")))

    def _endpoint(self, want: Wanted, address: str) -> Endpoint:
        if want.kind == "service":
            return Endpoint.make("service", want.name, want.network, address)
        return Endpoint.make(want.kind, want.name, want.network, address, self.host, self.vtep, want.aliases)

    def _lease_of(self, want: Wanted) -> int:
        return 0 if want.kind == "service" else self.lease

    def _candidates(self, spec: Spec, want: Wanted) -> Iterator[str]:
        if want.static is not None:
            yield want.static
            return
        net = spec.networks[want.network]
        subnet = net.subnet
        assert isinstance(subnet, ipaddress.IPv4Network)
        pool = net.ip_range or subnet
        skip = {int(subnet.network_address), int(subnet.broadcast_address)}
        gw = gateway(net, subnet)
        if gw is not None:
            skip.add(int(gw))
        for ctr in spec.containers.values():
            att = ctr.attachments().get(want.network)
            if att is not None and att.ipv4_address is not None:
                skip.add(int(att.ipv4_address))
        preferred = ipaddress.IPv4Address(want.preferred) if want.preferred is not None else None
        if preferred is not None and preferred in pool and int(preferred) not in skip:
            yield str(preferred)
        first, size = int(pool.network_address), pool.num_addresses
        key = f"{self.scope}/{want.network}/{want.kind}/{want.name}"
        start = int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) % size
        for i in range(size):
            addr = first + (start + i) % size
            if addr not in skip:
                yield str(ipaddress.IPv4Address(addr))

    def _release(self, spec: Spec) -> None:
        """Delete what this host claimed and its spec no longer wants."""
        keep = {(w.kind, w.name, w.network) for w in wanted(spec, self.host, {})}
        for key, e in list(self.view.entries.items()):
            if self._unwanted(self.keys.split(key), e, spec, keep):
                self._delete(key)

    def _unwanted(self, parts: list[str], e: Entry, spec: Spec, keep: set[tuple[str, str, str]]) -> bool:
        if parts[:1] == ["ipam"]:
            ep = Endpoint.from_json(e.value)
            return ep.host == self.host and (ep.kind, ep.name, ep.network) not in keep
        if parts[:1] == ["names"]:
            return json.loads(e.value)["host"] == self.host and parts[1] not in spec.containers
        if parts[:1] == ["networks"]:
            return parts[2:] == [self.host] and parts[1] not in overlay_networks(spec)
        return False

    # Transactions.
    def _create(self, items: list[tuple[str, str]], lease: int) -> tuple[bool, dict[str, Entry]]:
        """Create every key if none exists (one transaction); else what exists of them."""
        puts: list[dict[str, Any]] = []
        for key, value in items:
            put: dict[str, Any] = {"key": b64(key), "value": b64(value)}
            if lease:
                put["lease"] = lease
            puts.append({"request_put": put})
        result = self.client.txn(
            {
                "compare": [
                    {"key": b64(k), "result": "EQUAL", "target": "VERSION", "version": 0} for k, _ in items
                ],
                "success": puts,
                "failure": [{"request_range": {"key": b64(k)}} for k, _ in items],
            }
        )
        revision = int(result["header"]["revision"])
        if result.get("succeeded"):
            for key, value in items:
                self.view.entries[key] = Entry(key, value, lease, revision, revision)
            return True, {}
        found: dict[str, Entry] = {}
        for response in result.get("responses", []):
            for kv in response.get("response_range", {}).get("kvs", []):
                e = entry(kv)
                found[e.key] = self.view.entries[e.key] = e
        return False, found

    def _rebind(self, held: Entry, value: str | None = None) -> None:
        """Our key from an earlier lease (a restarted daemon) moved to this one, if unchanged meanwhile."""
        lease = self.lease if held.lease or value is None else 0
        new = value if value is not None else held.value
        result = self.client.txn(
            {
                "compare": [
                    {
                        "key": b64(held.key),
                        "result": "EQUAL",
                        "target": "MOD",
                        "mod_revision": held.mod_revision,
                    }
                ],
                "success": [
                    {
                        "request_put": {
                            "key": b64(held.key),
                            "value": b64(new),
                            **({"lease": lease} if lease else {}),
                        }
                    }
                ],
                "failure": [],
            }
        )
        if result.get("succeeded"):
            revision = int(result["header"]["revision"])
            self.view.entries[held.key] = Entry(held.key, new, lease, held.create_revision, revision)

    def _put(self, key: str, value: str, lease: int) -> None:
        self.client.put(key, value, lease)
        self.view.entries[key] = Entry(key, value, lease, 0, 0)

    def _delete(self, key: str) -> None:
        self.client.delete(key)
        self.view.entries.pop(key, None)

    def _read_range(self, prefix: str) -> list[tuple[str, Entry]]:
        entries, _ = self.client.range(prefix)
        return [(e.key, e) for e in entries]


def wanted(spec: Spec, host: str, previous: dict[tuple[str, str], str]) -> list[Wanted]:
    """Every endpoint of this host's spec: its containers on overlays, its node address on each
    overlay, and the services' VIPs."""
    out = []
    for n in overlay_networks(spec):
        out.append(Wanted("node", host, n, preferred=previous.get((n, f"host:{host}"))))
        for c, ctr in spec.containers.items():
            att = ctr.attachments().get(n)
            if att is None:
                continue
            static = str(att.ipv4_address) if att.ipv4_address is not None else None
            out.append(Wanted("container", c, n, static, previous.get((n, c)), tuple(att.aliases)))
        for s, svc in spec.services.items():
            if svc.network == n:
                out.append(Wanted("service", s, n))
    return out


def definition(spec: Spec, network: str) -> dict[str, Any]:
    """What every host must agree on about an overlay network."""
    net = spec.networks[network]
    return {
        "subnet": str(net.subnet),
        "gateway": str(net.gateway) if net.gateway is not None else None,
        "ip_range": str(net.ip_range) if net.ip_range is not None else None,
        "vni": vni_of(spec, network),
        "mtu": net.mtu,
        "encrypted": net.encrypted,
    }


def _difference(network: str, host: str, theirs: dict[str, Any], mine: dict[str, Any]) -> Problem:
    fields = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
    what = ", ".join(f"{f} {theirs.get(f)} there, {mine.get(f)} here" for f in fields)
    return Problem(
        ("networks", network, fields[0]),
        f"overlay network {network} is defined differently on host {host}: {what}",
    )


def _owner(ep: Endpoint) -> tuple[str, str, str, str]:
    return (ep.kind, ep.name, ep.network, ep.host)


def _who(ep: Endpoint) -> str:
    return f"{ep.kind} {ep.name}" + (f" on host {ep.host}" if ep.host else "")
