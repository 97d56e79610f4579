"""`diff.plan` is a pure function of two states: golden folders plus a few direct properties.

Each `golden/<case>/` holds `desired.yaml` and `observed.yaml` (lists of `{kind: ..., <fields>}`) and
`plan.txt`, the expected `render.text_plan` of the plan. `UPDATE_GOLDEN=1 pytest tests/test_diff.py`
rewrites every `plan.txt` from the code; review the diff before committing
it, since a regenerated file only records what the code does, not what it should do.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.diff import Action, plan, summary
from reconciler.drivers.overlay.wgmodel import WgPeer
from reconciler.model import (
    KIND_ORDER,
    Bridge,
    HostsFile,
    Iface,
    Netns,
    NftElement,
    NftTable,
    Resource,
    Route,
    State,
    Sysctl,
)
from reconciler.policy.nsfw import NsPolicy
from reconciler.render import text_plan

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())
KINDS: dict[str, type[Resource]] = {cls.kind: cls for cls in Resource.__subclasses__()}
assert NsPolicy.kind in KINDS  # a kind is known once its module is imported


def load_state(path: Path) -> State:
    rows: list[dict[str, Any]] = yaml.safe_load(path.read_text()) or []
    state = State()
    for row in rows:
        fields = dict(row)
        if "peers" in fields:  # a WireGuard device's: YAML lists -> the tuples it holds
            fields["peers"] = tuple(WgPeer(*p) for p in fields["peers"])
        resource = KINDS[fields.pop("kind")](**fields)
        assert resource.key not in state.resources, f"{path}: {resource.key} listed twice"
        state.add(resource)
    return state


def state(*resources: Resource) -> State:
    out = State()
    for res in resources:
        out.add(res)
    return out


def test_loader_knows_every_kind() -> None:
    assert sorted(KINDS) == sorted(KIND_ORDER)


def test_enough_golden_cases() -> None:
    assert len(CASES) >= 10
    for case in CASES:
        assert {p.name for p in (GOLDEN / case).iterdir()} == {"desired.yaml", "observed.yaml", "plan.txt"}


@pytest.mark.parametrize("case", CASES)
def test_golden_plan(case: str) -> None:
    folder = GOLDEN / case
    actions = plan(load_state(folder / "desired.yaml"), load_state(folder / "observed.yaml"))
    text = text_plan(actions) + "\n"
    expected = folder / "plan.txt"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        expected.write_text(text)
        pytest.skip(f"rewrote {expected}: review it")
    assert text == expected.read_text()


# Direct properties, on the golden inputs or on small hand-built states.


def golden(case: str) -> tuple[State, State]:
    return load_state(GOLDEN / case / "desired.yaml"), load_state(GOLDEN / case / "observed.yaml")


def test_summary_counts_a_replacement_as_one_add_and_one_destroy() -> None:
    old, new = Sysctl("a", "0"), Sysctl("a", "1")
    actions = [
        Action("create", Sysctl("b", "1")),
        Action("replace", new, old, ("value",)),
        Action("replace", new, old, ("value",)),
        Action("change", new, old, ("value",)),
        Action("delete", old),
    ]
    assert summary(actions) == {"add": 3, "change": 1, "destroy": 3}
    assert summary([]) == {"add": 0, "change": 0, "destroy": 0}


def test_summary_of_a_golden_plan() -> None:
    actions = plan(*golden("immutable_replace"))
    assert [a.op for a in actions] == ["replace", "replace"]
    assert summary(actions) == {"add": 2, "change": 0, "destroy": 2}


@pytest.mark.parametrize(
    "case", ["nft_table_replaced", "delete_container", "orphan_host_veth", "netns_replaced"]
)
def test_plan_does_not_mutate_its_inputs(case: str) -> None:
    desired, observed = golden(case)
    desired_before, observed_before = copy.deepcopy(desired), copy.deepcopy(observed)
    assert plan(desired, observed)
    assert desired == desired_before and observed == observed_before
    assert list(desired.resources) == list(desired_before.resources)
    assert list(observed.resources) == list(observed_before.resources)


@pytest.mark.parametrize("case", ["create_all", "address_change", "nft_table_replaced"])
def test_plan_does_not_depend_on_insertion_order(case: str) -> None:
    desired, observed = golden(case)
    reversed_desired = state(*reversed(desired.resources.values()))
    reversed_observed = state(*reversed(observed.resources.values()))
    assert plan(reversed_desired, reversed_observed) == plan(desired, observed)


def test_deletions_come_first_in_reverse_kind_order_then_the_rest_in_kind_order() -> None:
    desired, observed = golden("address_change")
    observed.add(Netns("gone", "/run/netns/gone"))
    observed.add(HostsFile("gone", "# managed by netreconciler (scope default)\n"))
    actions = plan(desired, observed)
    rank = {kind: i for i, kind in enumerate(KIND_ORDER)}
    deletes = [rank[a.resource.kind] for a in actions if a.op == "delete"]
    rest = [rank[a.resource.kind] for a in actions if a.op != "delete"]
    assert [a.op == "delete" for a in actions] == [True] * len(deletes) + [False] * len(rest)
    assert deletes == sorted(deletes, reverse=True) and len(set(deletes)) == 3
    assert rest == sorted(rest)


def test_sysctl_is_changed_but_never_deleted() -> None:
    assert plan(State(), state(Sysctl("net.ipv4.ip_forward", "1"))) == []
    [action] = plan(state(Sysctl("net.ipv4.ip_forward", "1")), state(Sysctl("net.ipv4.ip_forward", "0")))
    assert (action.op, action.fields) == ("change", ("value",))


def test_adopted_namespace_is_never_deleted_but_its_interfaces_are() -> None:
    ns = Netns("app", "/proc/1234/ns/net", adopted=True)
    veth = Iface("app", "front", ns.path, "eth0", "nrv000000000001", "nr-front", "10.0.0.2/24")
    actions = plan(State(), state(ns, veth))
    assert [(a.op, a.resource.key) for a in actions] == [("delete", veth.key)]


def test_replaced_bridge_re_enslaves_ports_that_already_name_it() -> None:
    # A bridge deleted and created again has no ports, whatever the observed veth says.
    old_bridge = Bridge("front", "nr-old", "10.0.0.1/24")
    bridge = Bridge("front", "nr-front", "10.0.0.1/24")
    veth = Iface("web", "front", "/run/netns/web", "eth0", "nrv000000000001", "nr-front", "10.0.0.2/24")
    actions = plan(state(bridge, veth), state(old_bridge, veth))
    assert [(a.op, a.resource.key, a.fields) for a in actions] == [
        ("replace", bridge.key, ("ifname",)),
        ("change", veth.key, ("bridge",)),
    ]


def test_drift_in_one_table_leaves_the_other_familys_table_alone() -> None:
    desired, observed = golden("nft_table_replaced")
    actions = plan(desired, observed)
    touched = {a.resource.family for a in actions if isinstance(a.resource, NftElement | NftTable)}
    assert touched == {"inet"}


def test_fingerprint_drift_replaces_the_table_and_recreates_every_element() -> None:
    desired, observed = golden("nft_table_replaced")
    actions = plan(desired, observed)
    [table] = [a for a in actions if isinstance(a.resource, NftTable)]
    assert table.op == "replace"
    wanted = {k for k, r in desired.resources.items() if isinstance(r, NftElement) and r.family == "inet"}
    assert {a.resource.key for a in actions if isinstance(a.resource, NftElement)} == wanted
    assert all(a.op == "create" for a in actions if isinstance(a.resource, NftElement))


def test_deleted_table_takes_its_elements_without_element_deletes() -> None:
    desired, observed = golden("destroy_all")
    actions = plan(desired, observed)
    assert [a.resource.kind for a in actions if a.resource.kind.startswith("nft-")] == ["nft-table"]


def test_route_is_replaced_with_the_interface_it_goes_through() -> None:
    old = Iface("web", "front", "/run/netns/web", "eth0", "veth-web", "nr-front", "10.0.0.2/24")
    new = Iface("web", "front", "/run/netns/web", "eth0", "nrv000000000001", "nr-front", "10.0.0.2/24")
    route = Route("web", "/run/netns/web", "10.0.0.1", "eth0")
    other = Route("db", "/run/netns/db", "10.0.0.1", "eth0")
    actions = plan(state(new, route, other), state(old, route, other))
    assert [(a.op, a.resource.key) for a in actions] == [("replace", new.key), ("replace", route.key)]


# Applying a plan in order must never create an interface name that still exists in its namespace:
# the kernel refuses (EEXIST) and the run stops half-way.


def _iface(container: str, network: str, ifname: str) -> Iface:
    return Iface(container, network, f"/run/netns/{container}", ifname, f"nrv-{container}-{network}", None)


def _first_name_clash(observed: State, actions: list[Action]) -> str | None:
    """Replays the plan as `apply.execute` runs it: every deletion and the removal half of every
    replacement first, then creations and the creation half of replacements, in plan order."""
    present = {(r.netns, r.ifname) for r in observed.of_kind("iface") if isinstance(r, Iface)}
    for action in actions:
        if isinstance(action.resource, Iface) and action.op in ("delete", "replace"):
            old = action.before or action.resource
            assert isinstance(old, Iface)
            present.discard((old.netns, old.ifname))
    for action in actions:
        res = action.resource
        if not isinstance(res, Iface):
            continue
        if action.op in ("create", "replace"):
            if (res.netns, res.ifname) in present:
                return f"{action.op} {res.id}: {res.ifname} still exists in {res.netns}"
            present.add((res.netns, res.ifname))
    return None


def test_leaving_the_first_network_frees_eth0_before_it_is_reused() -> None:
    observed = state(_iface("c", "a", "eth0"), _iface("c", "b", "eth1"))
    desired = state(_iface("c", "b", "eth0"))
    actions = plan(desired, observed)
    assert [(a.op, a.resource.id) for a in actions] == [("delete", "c/a"), ("replace", "c/b")]
    assert _first_name_clash(observed, actions) is None


def test_new_first_network_does_not_claim_eth0_before_the_old_one_is_replaced() -> None:
    observed = state(_iface("c", "z", "eth0"))
    desired = state(_iface("c", "a", "eth0"), _iface("c", "z", "eth1"))
    actions = plan(desired, observed)
    assert _first_name_clash(observed, actions) is None


def test_swapping_network_order_swaps_interface_names_without_clash() -> None:
    observed = state(_iface("c", "a", "eth0"), _iface("c", "b", "eth1"))
    desired = state(_iface("c", "a", "eth1"), _iface("c", "b", "eth0"))
    actions = plan(desired, observed)
    assert _first_name_clash(observed, actions) is None


def test_route_in_a_replaced_namespace_is_replaced_not_changed() -> None:
    old_ns, new_ns = Netns("web", "/run/netns/web-old"), Netns("web", "/run/netns/web")
    old_route = Route("web", old_ns.path, "10.0.0.1", "eth0")
    new_route = Route("web", new_ns.path, "10.0.0.1", "eth0")
    actions = {a.resource.key: a for a in plan(state(new_ns, new_route), state(old_ns, old_route))}
    assert actions[old_ns.key].op == "replace"
    assert actions[new_route.key].op == "replace"


def test_adopted_namespace_is_not_deleted_by_a_replacement() -> None:
    adopted = Netns("web", "/run/netns/web", adopted=True)
    actions = plan(state(Netns("web", "/run/netns/web")), state(adopted))
    assert not [a for a in actions if a.op in ("delete", "replace") and (a.before or a.resource) == adopted]
