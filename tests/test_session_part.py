"""`session.reach` and `session.narrow`, pure: a change of some containers is planned as a part.

The invariant: the part's allocation, with the rest's entries reserved, is the allocation a whole plan
makes, and the whole desired state is the last one with the part's resources replaced by the part's
desired state. Checked against the whole computation for adds, removals, port and static-address
changes, on one network and across networks, IPv4 and dual-stack.
"""

from __future__ import annotations

from typing import Any

import pytest

from reconciler import ipam
from reconciler.desired import desired_state
from reconciler.model import State
from reconciler.observe import Observed
from reconciler.session import narrow, reach
from reconciler.spec import Spec
from reconciler.statedir import NetworkRecord, ScopeRecord


def spec(containers: dict[str, dict[str, Any]], **more: Any) -> Spec:
    networks = {
        "n1": {"subnet": "10.1.0.0/24"},
        "n2": {"subnet": ["10.2.0.0/24", "fd00:2::/64"]},
    }
    return Spec.model_validate({"version": 1, "networks": networks, "containers": containers, **more})


def members(n: int, network: str = "n1", first: int = 0) -> dict[str, dict[str, Any]]:
    return {f"c{i}": {"networks": [network], "ports": [f"{20000 + i}:80"]} for i in range(first, first + n)}


BASE = {**members(6), **members(3, "n2", 6)}

CHANGES = {
    "add one": {**BASE, "new": {"networks": ["n1"]}},
    "add two on both networks": {**BASE, "x": {"networks": ["n1", "n2"]}, "y": {"networks": ["n2"]}},
    "remove one": {c: x for c, x in BASE.items() if c != "c2"},
    "change a port": {**BASE, "c1": {"networks": ["n1"], "ports": ["30000:80"]}},
    "static address held by another": {**BASE, "new": {"networks": {"n1": {"ipv4_address": "10.1.0.4"}}}},
    "static IPv6 address held by another": {
        **BASE,
        "new": {"networks": {"n2": {"ipv6_address": "fd00:2::3"}}},
    },
    "move to another network": {**BASE, "c0": {"networks": ["n2"], "ports": ["20000:80"]}},
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_part_plans_what_the_whole_spec_would(change: str) -> None:
    old, new = spec(BASE), spec(CHANGES[change])
    previous = ipam.allocate(old, ScopeRecord(), [])
    part = reach(old, new)
    assert part is not None and part, "a change of containers alone is a part"
    assert len(part) <= 2 or change == "add two on both networks"
    narrowed = narrow(old, new, part, Observed(desired_state(old, previous, "default")), previous)
    record = ipam.allocate(narrowed.spec, previous, [], narrowed.keep)
    whole = ipam.allocate(new, previous, [])
    assert record == whole  # the same addresses, the rest's entries kept
    for net in whole.networks.values():  # no address twice
        assert len(set(net.addresses.values())) == len(net.addresses)
        assert len(set(net.addresses6.values())) == len(net.addresses6)
    before = desired_state(old, previous, "default").resources
    composed = {k: r for k, r in before.items() if k not in narrowed.old_keys}
    composed.update(desired_state(narrowed.spec, record, "default").resources)
    assert composed == desired_state(new, whole, "default").resources


def test_reach_is_the_changed_containers_alone() -> None:
    old = spec(BASE)
    assert reach(old, spec({**BASE, "new": {"networks": ["n1"]}})) == {"new"}
    assert reach(old, spec(CHANGES["change a port"])) == {"c1"}
    assert reach(old, spec(CHANGES["remove one"])) == {"c2"}
    assert reach(old, spec(BASE)) == set()


ICC_OFF = {"n1": {"subnet": "10.1.0.0/24", "icc": False}, "n2": {"subnet": "10.2.0.0/24"}}


@pytest.mark.parametrize(
    "more",
    [
        pytest.param({"name": "other"}, id="another scope"),
        pytest.param({"policies": {"p": {"to": ["c0"], "from": ["c1"]}}}, id="a policy added"),
        pytest.param({"networks": ICC_OFF}, id="a network changed"),
    ],
)
def test_reach_is_whole_when_more_than_containers_changed(more: dict[str, Any]) -> None:
    assert reach(spec(BASE), spec(BASE, **more)) is None


def test_reach_is_whole_when_a_policy_names_a_changed_container() -> None:
    policy = {"policies": {"p": {"to": ["c0"], "from": ["c1"]}}}
    old = spec(BASE, **policy)
    # c1 is a source of c0's elements, c0 their destination: their addresses make c0's elements.
    assert reach(old, spec({c: x for c, x in BASE.items() if c != "c1"}, **policy)) is None
    assert reach(old, spec({**BASE, "c0": {"networks": ["n1"], "ports": ["1:80"]}}, **policy)) is None
    # A container no policy names is a part of its own.
    assert reach(old, spec({**BASE, "new": {"networks": ["n1"]}}, **policy)) == {"new"}


def test_reach_is_whole_for_drivers_whose_host_side_depends_on_every_member() -> None:
    def macvlan(containers: dict[str, Any]) -> Spec:
        net = {"m": {"driver": "macvlan", "parent": "eth0", "subnet": "10.9.0.0/24"}}
        return Spec.model_validate({"version": 1, "networks": net, "containers": containers})

    old = macvlan({"a": {"networks": ["m"]}, "b": {"networks": ["m"]}})
    assert reach(old, macvlan({"a": {"networks": ["m"]}})) is None


def test_reach_is_whole_when_every_container_changed() -> None:
    assert reach(spec(members(2)), spec(members(2, first=2))) is None


def test_narrow_keeps_the_rest_of_a_covered_network_reserved() -> None:
    old, new = spec(BASE), spec(CHANGES["add one"])
    previous = ipam.allocate(old, ScopeRecord(), [])
    narrowed = narrow(old, new, {"new"}, Observed(), previous)
    assert narrowed.containers == {"new"}
    assert set(narrowed.spec.containers) == {"new"}
    assert narrowed.keep.networks["n1"].addresses == previous.networks["n1"].addresses
    assert narrowed.keep.networks["n2"] == previous.networks["n2"]


def test_narrow_takes_in_the_container_whose_address_a_static_one_takes() -> None:
    old, new = spec(BASE), spec(CHANGES["static address held by another"])
    previous = ipam.allocate(old, ScopeRecord(), [])
    holder = next(c for c, a in previous.networks["n1"].addresses.items() if a == "10.1.0.4")
    narrowed = narrow(old, new, {"new"}, Observed(), previous)
    assert narrowed.containers == {"new", holder}
    assert holder not in narrowed.keep.networks["n1"].addresses


def test_a_part_allocation_never_hands_out_a_reserved_address() -> None:
    new = spec({"a": {"networks": ["n1"]}, "b": {"networks": ["n1"]}})
    kept = ScopeRecord({"n1": NetworkRecord("10.1.0.0/24", {"x": "10.1.0.2", "y": "10.1.0.3"})})
    record = ipam.allocate(new, ScopeRecord(), [], kept)
    assert record.networks["n1"].addresses == {
        "x": "10.1.0.2",
        "y": "10.1.0.3",
        "a": "10.1.0.4",
        "b": "10.1.0.5",
    }


def test_a_part_allocation_refuses_to_move_the_rest() -> None:
    new = spec({"a": {"networks": {"n1": {"ipv4_address": "10.1.0.2"}}}})
    kept = ScopeRecord({"n1": NetworkRecord("10.1.0.0/24", {"x": "10.1.0.2"})})
    with pytest.raises(ipam.Moved, match=r"10\.1\.0\.2 is held"):
        ipam.allocate(new, ScopeRecord(), [], kept)
    moved = ScopeRecord({"n1": NetworkRecord("10.7.0.0/24", {"x": "10.7.0.2"})})
    with pytest.raises(ipam.Moved, match="subnet moved"):
        ipam.allocate(spec({"a": {"networks": ["n1"]}}), ScopeRecord(), [], moved)


def test_the_desired_state_of_the_rest_is_untouched_by_a_part() -> None:
    old, new = spec(BASE), spec(CHANGES["add one"])
    previous = ipam.allocate(old, ScopeRecord(), [])
    narrowed = narrow(old, new, {"new"}, Observed(desired_state(old, previous, "default")), previous)
    record = ipam.allocate(narrowed.spec, previous, [], narrowed.keep)
    part = State(desired_state(narrowed.spec, record, "default").resources)
    named = {r.container for r in part.resources.values() if getattr(r, "container", None)}
    assert named == {"new"}
