"""The daemon's pure parts: which containers an edit touches, the partial-observe merge, the
post-apply memory, and how netlink messages become drift hints (fed hand-built messages)."""

from __future__ import annotations

import struct
from typing import Any

from reconciler import ipam, names
from reconciler.desired import desired_state
from reconciler.diff import plan
from reconciler.model import Netns, State
from reconciler.observe import Observed
from reconciler.spec import Spec
from reconciler.statedir import ScopeRecord
from reconciler.watch import cache, events
from reconciler.watch.daemon import _Applied
from reconciler.watch.events import Drift, Events

NETS = {"front": {"subnet": "10.1.0.0/24"}, "back": {"subnet": "10.2.0.0/24"}}


def spec(containers: dict[str, Any], networks: dict[str, Any] | None = None) -> Spec:
    return Spec.model_validate({"version": 1, "networks": networks or NETS, "containers": containers})


def desired(s: Spec) -> State:
    return desired_state(s, ipam.allocate(s, ScopeRecord(), []), "default")


def test_changed_containers_follow_containers_and_their_networks() -> None:
    old = spec({"a": {"networks": ["front"]}, "b": {"networks": ["back"]}, "c": {"networks": ["back"]}})
    added = spec({**old.model_dump()["containers"], "d": {"networks": ["front"]}})
    assert cache.changed_containers(old, added) == {"d"}
    moved = spec({"a": {"networks": ["front"]}, "b": {"networks": ["front"]}, "c": {"networks": ["back"]}})
    assert cache.changed_containers(old, moved) == {"b"}
    renet = spec(old.model_dump()["containers"], {**NETS, "back": {"subnet": "10.3.0.0/24"}})
    assert cache.changed_containers(old, renet) == {"b", "c"}
    assert cache.changed_containers(None, old) is None
    assert cache.changed_containers(old, old.model_copy(update={"name": "other"})) is None


def test_desired_changes_name_only_namespace_level_changes() -> None:
    old = spec({"a": {"networks": ["front"]}, "b": {"networks": ["front"]}})
    new = spec({"a": {"networks": ["front"]}, "b": {"networks": ["front"]}, "c": {"networks": ["front"]}})
    # Every hosts file of the network changes too, but files are always re-read: only c's namespace.
    assert cache.desired_changes(desired(old), desired(new)) == {"c"}


def test_merge_keeps_other_containers_and_takes_fresh_host_level() -> None:
    old = desired(spec({"a": {"networks": ["front"]}, "b": {"networks": ["front"]}}))
    remembered = Observed(state=old, foreign_netns={"/run/netns/b", "/run/netns/x"})
    fresh_state = State()
    for key, res in old.resources.items():
        if cache.container_of(res) != "a" and key[0] not in cache.NAMESPACE_KINDS:
            fresh_state.add(res)
    merged = cache.merge(remembered, Observed(state=fresh_state, foreign_links={"eth0"}), {"b"}, {})
    assert ("netns", "a") in merged.state.resources and ("netns", "b") not in merged.state.resources
    assert ("iface", "b/front") not in merged.state.resources
    assert merged.foreign_netns == {"/run/netns/x"} and merged.foreign_links == {"eth0"}
    assert plan(old, merged.state)[0].resource.key == ("netns", "b")


def test_applied_memory_makes_the_same_plan_empty() -> None:
    target = desired(spec({"a": {"networks": ["front"]}}))
    observed = Observed(state=State({("netns", "gone"): Netns("gone", "/run/netns/gone")}))
    actions = plan(target, observed.state)
    assert plan(target, cache.applied(observed, actions).state) == []


def test_own_events_are_recognised_by_window_and_scope() -> None:
    ours = _Applied(start=10.0, end=11.0, containers={"a"}, nft=True)
    assert ours.caused(Drift(10.5, containers=frozenset({"a"})))
    assert ours.caused(Drift(11.1, nft=True))
    assert not ours.caused(Drift(10.5, containers=frozenset({"b"})))
    assert not ours.caused(Drift(12.0, containers=frozenset({"a"})))
    assert not ours.caused(Drift(10.5, full=True))
    assert not _Applied(start=10.0, end=11.0, containers={"a"}).caused(Drift(10.5, nft=True))


def _msg(body: bytes, *attrs: tuple[int, bytes]) -> bytes:
    out = body
    for kind, value in attrs:
        raw = struct.pack("=HH", 4 + len(value), kind) + value
        out += raw + bytes(-len(raw) % 4)
    return out


def _link(index: int, alias: str | None, flags: int = 1, mtu: int = 1500, family: int = 0) -> bytes:
    attrs = [(3, b"nrv0\0"), (4, struct.pack("=I", mtu))]
    if alias:
        attrs.append((events.IFLA_IFALIAS, alias.encode() + b"\0"))
    return _msg(struct.pack("=BxHiII", family, 1, index, flags, 0), *attrs)


def test_link_and_address_events_name_their_owner() -> None:
    ev = Events.__new__(Events)  # no sockets: only the message handling is under test
    ev._owners = events._Owners("default")
    ev._dump_seq = 1
    ev.scope = "default"
    veth = names.mark("default", "veth", "web/front")
    assert ev._route(events.RTM_NEWLINK, 1, _link(7, veth), 0.0) is None  # the seed dump
    assert ev._route(events.RTM_NEWLINK, 0, _link(7, veth), 1.0) is None  # nothing we manage changed
    assert ev._route(events.RTM_NEWLINK, 0, _link(7, veth, mtu=1400), 2.0) == Drift(
        2.0, containers=frozenset({"web"})
    )
    # IPv6 addrconf re-announces the link without its alias: not a lost mark.
    assert ev._route(events.RTM_NEWLINK, 0, _link(7, None, family=10), 2.5) is None
    addr = _msg(struct.pack("=BBBBI", 2, 24, 0, 0, 7))
    assert ev._route(events.RTM_DELADDR, 0, addr, 3.0) == Drift(3.0, containers=frozenset({"web"}))
    assert ev._route(events.RTM_DELLINK, 0, _link(7, None), 4.0) == Drift(4.0, containers=frozenset({"web"}))
    assert ev._route(events.RTM_DELADDR, 0, addr, 5.0) is None  # the link is gone and forgotten
    other = names.mark("pets", "network", "front")
    assert ev._route(events.RTM_NEWLINK, 0, _link(8, other), 6.0) is None  # another scope's
    bridge = names.mark("default", "network", "front")
    assert ev._route(events.RTM_NEWLINK, 0, _link(9, bridge), 7.0) == Drift(7.0, host=True)
    neigh = _msg(struct.pack("=BxxxiHBB", 2, 9, 0x02, 0, 1))  # a reachable (learnt) entry: churn
    assert ev._route(events.RTM_NEWNEIGH, 0, neigh, 8.0) is None
    static = _msg(struct.pack("=BxxxiHBB", 2, 9, events.NUD_PERMANENT, 0, 1))
    assert ev._route(events.RTM_DELNEIGH, 0, static, 9.0) == Drift(9.0, host=True)


def test_overlay_entry_events_name_their_entry() -> None:
    ev = Events.__new__(Events)
    ev._owners = events._Owners("default")
    ev._dump_seq = 1
    ev.scope = "default"
    vxlan = names.mark("default", "vxlan", "pets")
    ev._route(events.RTM_NEWLINK, 1, _link(5, vxlan), 0.0)
    mac = bytes.fromhex("02420ad20059")
    fdb = _msg(struct.pack("=BxxxiHBB", events.AF_BRIDGE, 5, 0xC0, 2, 1), (events.NDA_LLADDR, mac))
    assert ev._route(events.RTM_DELNEIGH, 0, fdb, 1.0) == Drift(
        1.0, host=True, entries=frozenset({"fdb/02:42:0a:d2:00:59"})
    )
    # `ip neigh del` announces the entry as FAILED: on our VXLAN device it still counts.
    failed = _msg(struct.pack("=BxxxiHBB", 2, 5, 0x20, 0, 1), (events.NDA_DST, bytes([10, 210, 0, 89])))
    hint = ev._route(events.RTM_DELNEIGH, 0, failed, 2.0)
    assert hint == Drift(2.0, host=True, entries=frozenset({"neigh/10.210.0.89"}))
    # Right after an apply that changed other entries, a deleted entry is not that apply's echo.
    applied = _Applied(start=1.9, end=2.0, entries={"fdb/02:42:0a:d2:00:fb", "neigh/10.210.0.251"})
    assert not applied.caused(hint)
    assert _Applied(start=1.9, end=2.0, entries={"neigh/10.210.0.89"}).caused(hint)


def test_nftables_events_for_our_tables_only() -> None:
    ev = Events.__new__(Events)
    ev._owners = events._Owners("default")
    ev.scope = "default"
    deltable = (events.NFNL_SUBSYS_NFTABLES << 8) | 2
    ours = _msg(struct.pack("=BBH", events.NFPROTO["inet"], 0, 0), (1, b"netreconciler\0"))
    theirs = _msg(struct.pack("=BBH", events.NFPROTO["inet"], 0, 0), (1, b"filter\0"))
    assert ev._netfilter(deltable, 0, ours, 1.0) == Drift(1.0, nft=True)
    assert ev._netfilter(deltable, 0, theirs, 1.0) is None
    newgen = (events.NFNL_SUBSYS_NFTABLES << 8) | events.NFT_MSG_NEWGEN
    assert ev._netfilter(newgen, 0, ours, 1.0) is None
