"""The resolver's records, pure: built from a scope's desired state (what `apply` publishes), then
compiled into wire answers per view (what the server looks up).

Docker's scope: a container resolves the names, aliases and service names of the networks it is on.
Containers on the same networks share one view, so 1,000 containers on one network cost one table,
not 1,000. A table maps the lowercased question (name and type, as on the wire) to the answer's
header and records, ready to follow the asker's own question; the server only adds the query's ID.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..drivers.overlay.clusteripam import Allocation, allocate
from ..model import Netns, State
from ..statedir import ScopeRecord
from . import wire

if TYPE_CHECKING:
    from ..spec import Attachment, Spec

TYPES = {t: struct.pack("!H", t) for t in (wire.A, wire.AAAA, wire.PTR)}
TTL = 2  # seconds: an answer never outlives a change by more than this
VERSION = 1
Records = dict[str, Any]  # one scope's records, as stored in its JSON file


def scope_records(spec: Spec, record: ScopeRecord, desired: State, vips: dict[str, list[str]]) -> Records:
    """`spec`: the whole (cluster) spec; `record`: its allocation (with the cluster's overlay
    addresses); `desired`: which containers run here and in which namespace; `vips`: service -> its
    VIPs (one per family).
    Per network, hosts-file-like lines (address, name, aliases...): names across hosts where the
    record holds their addresses (overlay), this host's alone elsewhere."""
    lines: dict[str, list[list[str]]] = {n: [] for n in spec.networks}
    attached = {c: ctr.attachments() for c, ctr in spec.containers.items()}
    for c, atts in attached.items():
        _add_lines(lines, c, atts, record)
    for s, svc in spec.services.items():
        lines[svc.network] += [[vip, s] for vip in vips.get(s, ())]
    containers = {
        res.container: {"netns": res.path, "networks": list(attached[res.container])}
        for res in desired.resources.values()
        if isinstance(res, Netns) and res.container in attached
    }
    internal = sorted(n for n, net in spec.networks.items() if net.internal)
    return {"version": VERSION, "networks": lines, "internal": internal, "containers": containers}


def with_part(
    previous: Records, spec: Spec, part: Collection[str], record: ScopeRecord, netns: Mapping[str, str]
) -> Records:
    """`previous` (the scope's records as last published) with the lines and namespaces of the
    containers in `part` as `spec`, `record` and `netns` (container -> its namespace path here) have
    them now: what `scope_records` builds after a change of these containers alone (session.reach:
    networks and services unchanged), each network's lines of the part last. No encoding, no desired
    state walked: the rest is copied as it was."""
    lines = {
        n: [line for line in previous["networks"].get(n, []) if line[1] not in part] for n in spec.networks
    }
    containers = {c: entry for c, entry in previous["containers"].items() if c not in part}
    for c in part:
        ctr = spec.containers.get(c)
        if ctr is None:
            continue
        atts = ctr.attachments()
        _add_lines(lines, c, atts, record)
        if c in netns:
            containers[c] = {"netns": netns[c], "networks": list(atts)}
    return {**previous, "networks": lines, "containers": containers}


def _add_lines(
    lines: dict[str, list[list[str]]], c: str, atts: Mapping[str, Attachment], record: ScopeRecord
) -> None:
    """A container's hosts-like lines: per network, one per address it has there."""
    for n, att in atts.items():
        rec = record.networks.get(n)
        if rec is None:
            continue
        for address in (rec.addresses.get(c), rec.addresses6.get(c)):
            if address:
                lines[n].append([address, c, *att.aliases])


@dataclass
class Pieces:
    """The JSON of a scope's records by piece (a network's lines, a container's entry) as last
    encoded, with what each was encoded from (`encode`)."""

    networks: dict[str, tuple[object, str]] = field(default_factory=dict)
    containers: dict[str, tuple[object, str]] = field(default_factory=dict)


def encode(records: Records, pieces: Pieces) -> str:
    """`json.dumps(records, separators=(",", ":"))`, with the pieces that are as `pieces` has them
    (the same object, or equal) taken from it, which is updated: an apply that changed one container
    encodes its network's lines and its entry, not every container's."""
    out = []
    for key, value in records.items():
        if key == "networks":
            text = _encode_map(value, pieces.networks)
        elif key == "containers":
            text = _encode_map(value, pieces.containers)
        else:
            text = _dumps(value)
        out.append(f"{_dumps(key)}:{text}")
    return "{" + ",".join(out) + "}"


def _encode_map(values: dict[str, object], last: dict[str, tuple[object, str]]) -> str:
    """A map's JSON from its members' (`"key":value`, kept in `last` with the value)."""
    fresh: dict[str, tuple[object, str]] = {}
    for key, value in values.items():
        before = last.get(key)
        if before is None or not (before[0] is value or before[0] == value):
            before = (value, f"{_dumps(key)}:{_dumps(value)}")
        fresh[key] = before
    last.clear()
    last.update(fresh)
    return "{" + ",".join([member for _, member in fresh.values()]) + "}"


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


class Answer:
    """Header (flags and counts, per RD bit of the query) and records; several records are handed
    out in turn, each query getting them rotated by one (Docker shuffles, we rotate)."""

    __slots__ = ("headers", "records", "turn", "whole")

    def __init__(self, rcode: int, records: list[bytes], authoritative: bool = True) -> None:
        flags = wire.QR | wire.RA | (wire.AA if authoritative else 0) | rcode
        self.headers = (
            struct.pack("!HHHHH", flags, 1, len(records), 0, 0),
            struct.pack("!HHHHH", flags | wire.RD, 1, len(records), 0, 0),
        )
        self.records = records
        self.whole = b"".join(records)
        self.turn = 0

    def body(self) -> bytes:
        if len(self.records) < 2:
            return self.whole
        turn = self.turn = (self.turn + 1) % len(self.records)
        return b"".join(self.records[turn:] + self.records[:turn])


@dataclass
class View:
    """What one set of networks of one scope resolves; `forward` is False when all of them are
    internal (no name leaves them, CVE-2024-29018)."""

    table: dict[bytes, Answer] = field(default_factory=dict)
    names: set[bytes] = field(default_factory=set)  # owned names: NOERROR without data for other types
    forward: bool = True
    hot: dict[bytes, bytes] = field(default_factory=dict)  # a query after its ID -> the reply after it


Entry = tuple[bytes, int, bytes]  # lowercased wire name, type, record
Memo = dict[tuple[str, ...], list[Entry]]  # a hosts-like line -> its records
ViewKey = tuple[str, tuple[str, ...], bool]  # scope, the networks it resolves, whether it forwards


@dataclass
class Network:
    """One scope's network as last compiled: its lines, their records, the names they own."""

    lines: list[list[str]]
    entries: list[Entry]
    names: set[bytes]
    memo: Memo  # its lines' records, reused when the network changes


@dataclass
class Made:
    """A view as compiled, with the entries of the networks it was made of (compared by identity)."""

    entries: tuple[list[Entry], ...]
    view: View


@dataclass
class Compiled:
    views: dict[str, View]  # namespace path -> its view
    ours: set[bytes]  # every name any view answers: NXDOMAIN where not shared, never forwarded
    networks: dict[tuple[str, str], Network] = field(default_factory=dict)  # by scope and network
    made: dict[ViewKey, Made] = field(default_factory=dict)


def compile_all(scopes: dict[str, Records], previous: Compiled | None = None) -> Compiled:
    """Every namespace's view. `previous`: the last compile; a network whose lines are those it
    compiled keeps its records, and a view whose networks all kept theirs is kept (its remembered
    replies dropped: another network's names may have come or gone), so a reload after adding one
    container encodes one line and rebuilds the views of one network, not every network's."""
    old_networks = previous.networks if previous else {}
    old_made = previous.made if previous else {}
    networks: dict[tuple[str, str], Network] = {}
    made: dict[ViewKey, Made] = {}
    views: dict[str, View] = {}
    for scope, records in scopes.items():
        entries: dict[str, list[Entry]] = {}
        for n, lines in records["networks"].items():
            network = _network(lines, old_networks.get((scope, n)))
            networks[(scope, n)] = network
            entries[n] = network.entries
        internal = set(records.get("internal", []))
        by_nets: dict[tuple[str, ...], View] = {}
        for ctr in records["containers"].values():
            listed = tuple(ctr["networks"])
            view = by_nets.get(listed)
            if view is None:
                nets = tuple(n for n in listed if n in entries)
                key = (scope, nets, not nets or not set(nets) <= internal)
                view = by_nets[listed] = _made(key, tuple(entries[n] for n in nets), old_made, made)
            views[ctr["netns"]] = view
    same = networks.keys() == old_networks.keys() and all(networks[k] is old_networks[k] for k in networks)
    if previous is not None and same:
        ours = previous.ours
    else:
        ours = set().union(*(network.names for network in networks.values()))
    return Compiled(views, ours, networks, made)


def _network(lines: list[list[str]], old: Network | None) -> Network:
    if old is not None and old.lines == lines:
        return old
    memo: Memo = {}
    entries: list[Entry] = []
    for line in lines:
        key = tuple(line)
        found = memo.get(key) or (old.memo.get(key) if old else None)
        if found is None:
            found = _line_entries(line)
        memo[key] = found
        entries.extend(found)
    return Network(lines, entries, {qname for qname, _, _ in entries}, memo)


def _made(
    key: ViewKey, entries: tuple[list[Entry], ...], old: dict[ViewKey, Made], made: dict[ViewKey, Made]
) -> View:
    """The view of these networks' `entries`: made in this compile already, kept from the last one
    when it was made of the same entries, or made anew (reusing the old view's unchanged answers)."""
    found = made.get(key)
    if found is not None:
        return found.view
    before = old.get(key)
    if before is not None and _same(before.entries, entries):
        before.view.hot.clear()
        made[key] = before
        return before.view
    view = _view(entries, key[2], before.view.table if before else {})
    made[key] = Made(entries, view)
    return view


def _same(a: tuple[list[Entry], ...], b: tuple[list[Entry], ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def _line_entries(line: list[str]) -> list[Entry]:
    address, *hostnames = line
    rtype, rdata = wire.address_rdata(address)
    record = wire.rr(rtype, TTL, rdata)
    out = [(wire.encode_name(name).lower(), rtype, record) for name in hostnames]
    reverse = wire.encode_name(wire.reverse_name(address))
    out.append((reverse, wire.PTR, wire.rr(wire.PTR, TTL, wire.encode_name(hostnames[0]))))
    return out


def _view(networks: tuple[list[Entry], ...], forward: bool, old: dict[bytes, Answer]) -> View:
    found: dict[tuple[bytes, int], list[bytes]] = {}
    for entries in networks:
        for qname, rtype, record in entries:
            records = found.setdefault((qname, rtype), [])
            if record not in records:  # a name on two shared networks with one address answers once
                records.append(record)
    view = View(forward=forward)
    for (qname, rtype), records in found.items():
        # qtypes 1, 12 and 28 hold no ASCII letter, so the server may lowercase name and type at once.
        key = qname + TYPES[rtype]
        answer = old.get(key)
        if answer is None or answer.records != records:
            answer = Answer(wire.NOERROR, records)
        view.table[key] = answer
        view.names.add(qname)
    return view


def service_vips(spec: Spec, lock: Allocation | None) -> dict[str, list[str]]:
    """Service -> its VIPs of both families, from the cluster allocation (every host computes the same
    one)."""
    if not spec.services:
        return {}
    alloc = allocate(spec, lock)
    out: dict[str, list[str]] = {}
    for s, svc in spec.services.items():
        a = alloc.get(svc.network)
        if a is not None:
            out[s] = [vip for vip in (a.services.get(s), a.services6.get(s)) if vip]
    return out
