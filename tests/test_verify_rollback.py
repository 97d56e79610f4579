"""Verification and the revert plan are pure functions of states: tested here without a kernel."""

from __future__ import annotations

import pytest

from reconciler import engine, verify
from reconciler.diff import plan
from reconciler.errors import ApplyFailed
from reconciler.model import Bridge, HostsFile, Iface, Netns, Resource, Route, State
from reconciler.rollback import revert_plan


def state(*resources: Resource) -> State:
    out = State()
    for res in resources:
        out.add(res)
    return out


BRIDGE = Bridge("n", "nr-n", "10.0.0.1/24", 1500)
NETNS = Netns("web", "/run/netns/web")
IFACE = Iface("web", "n", "/run/netns/web", "eth0", "nrv1", "nr-n", "10.0.0.2/24", "02:42:0a:00:00:02", 1500)


def test_mismatches_name_path_desired_and_observed() -> None:
    observed = state(Bridge("n", "nr-n", "10.0.0.1/24", 1400), NETNS, Netns("old", "/run/netns/old"))
    found = verify.mismatches(state(BRIDGE, NETNS, IFACE), observed)
    assert found == [
        "netns old: desired absent, observed present",
        "bridge n: mtu: desired 1500, observed 1400",
        "iface web/n: desired present, observed absent",
    ]


def test_verify_retries_then_reports_the_first_mismatches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify, "DELAYS", (0.0, 0.0, 0.0))
    seen: list[State] = []

    def lagging() -> State:
        seen.append(State())
        return state(BRIDGE) if len(seen) == 3 else State()

    verify.verify(state(BRIDGE), lagging)  # the kernel caught up at the third look
    assert len(seen) == 3
    desired = state(*(Netns(f"c{i}", f"/run/netns/c{i}") for i in range(7)))
    with pytest.raises(ApplyFailed) as caught:
        verify.verify(desired, State)
    assert str(caught.value) == (
        "verification failed: "
        + "; ".join(f"netns c{i}: desired present, observed absent" for i in range(5))
        + " (and 2 more)"
    )


def test_revert_plan_restores_the_snapshot_in_dependency_order() -> None:
    snapshot = state(BRIDGE, NETNS, IFACE)
    now = state(Bridge("n", "nr-n", "10.0.0.1/24", 9000), Netns("new", "/run/netns/new"))
    undo = [(a.op, a.resource.kind, a.resource.id) for a in revert_plan(snapshot, now)]
    assert undo == [
        ("delete", "netns", "new"),
        ("change", "bridge", "n"),
        ("create", "netns", "web"),
        ("create", "iface", "web/n"),
    ]
    assert revert_plan(snapshot, snapshot) == []


def test_revert_plan_does_not_recreate_an_orphaned_host_veth() -> None:
    orphan = Iface("gone", "n", "", "", "nrv2", None, up=False)
    assert revert_plan(state(BRIDGE, orphan), state(BRIDGE)) == []


def test_host_veth_of_a_dying_namespace_is_left_to_the_kernel() -> None:
    orphan = Iface("gone", "n", "", "", "nrv2", None, up=False)
    assert verify.mismatches(state(BRIDGE), state(BRIDGE, orphan)) == []


def test_veth_ends_that_disagreed_have_no_mtu_to_restore() -> None:
    split = Iface("web", "n", "/run/netns/web", "eth0", "nrv1", "nr-n", "10.0.0.2/24", None, 0)
    undo = revert_plan(state(split), state(IFACE))
    assert undo == []  # MTU 0 (ends disagreed) is no MTU to go back to; the rest matches


def test_touched_names_the_containers_whose_namespaces_a_plan_changes() -> None:
    hosts = HostsFile("db", "127.0.0.1 localhost\n")
    actions = plan(state(BRIDGE, NETNS, IFACE, hosts), state(Bridge("n", "nr-n", "10.0.0.1/24", 1400)))
    assert engine.touched(actions) == {"web"}  # the bridge and the hosts file are host level
    assert engine.touched(plan(state(BRIDGE), state(BRIDGE))) == set()


def test_over_takes_touched_namespaces_and_the_host_level_fresh() -> None:
    other = Netns("db", "/run/netns/db")
    route = Route("db", "/run/netns/db", "10.0.0.1", "eth0")
    snapshot = state(Bridge("n", "nr-n", "10.0.0.1/24", 1400), NETNS, other, route)
    fresh = state(BRIDGE, IFACE)  # web re-read with its new iface, and its netns gone meanwhile
    merged = engine.over(snapshot, fresh, {"web"})
    assert merged.resources == state(other, route, BRIDGE, IFACE).resources
