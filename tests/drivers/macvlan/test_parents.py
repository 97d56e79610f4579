"""`parents.parent_problems`: a macvlan parent that cannot be used refuses the spec before any change.

The kernel probe is injected, so these run without a kernel; the real probe's verdict on this kernel
(no 802.1Q) is asserted by the integration tests.
"""

from __future__ import annotations

from typing import Any

from reconciler import ipam
from reconciler.desired import desired_state
from reconciler.drivers.macvlan.parents import parent_mtus, parent_problems
from reconciler.model import State, Vlan
from reconciler.spec import Spec
from reconciler.statedir import ScopeRecord

VLAN_MISSING = "lacks 802.1Q VLAN support (module 8021q)"


class Probe:
    def __init__(self, supported: bool) -> None:
        self.supported, self.calls = supported, 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.supported


def problems(
    parents: dict[str, str], links: set[str], probe: Probe, observed: State | None = None
) -> list[str]:
    nets: dict[str, Any] = {n: {"driver": "macvlan", "parent": p, "ipam": "none"} for n, p in parents.items()}
    spec = Spec.model_validate({"version": 1, "networks": {**nets, "front": {}}})
    desired = desired_state(spec, ipam.allocate(spec, ScopeRecord(), []), "default", frozenset(links))
    return parent_problems(spec, desired, observed or State(), links, probe)


def test_existing_parents_pass_without_probing() -> None:
    probe = Probe(False)
    assert problems({"a": "eth0", "b": "eth0.10"}, {"eth0", "eth0.10"}, probe) == []
    assert probe.calls == 0


def test_missing_plain_parent() -> None:
    assert problems({"a": "eth9"}, {"eth0"}, Probe(True)) == [
        "network a: parent interface eth9 does not exist on this host"
    ]


def test_vlan_parent_on_a_missing_base() -> None:
    assert problems({"a": "eth9.10"}, {"eth0"}, Probe(True)) == [
        "network a: parent eth9.10 would be VLAN 10 on eth9, which does not exist on this host"
    ]


def test_vlan_parent_needs_kernel_support_probed_once() -> None:
    probe = Probe(False)
    found = problems({"a": "eth0.10", "b": "eth0.20"}, {"eth0"}, probe)
    assert len(found) == 2 and all(VLAN_MISSING in p for p in found)
    assert found[0].startswith("network a: parent eth0.10 is an 802.1Q VLAN sub-interface")
    assert probe.calls == 1


def test_vlan_parent_is_fine_when_the_kernel_can_create_it() -> None:
    assert problems({"a": "eth0.10"}, {"eth0"}, Probe(True)) == []


def test_our_existing_vlan_needs_no_probe() -> None:
    probe = Probe(False)
    observed = State()
    observed.add(Vlan("eth0.10", "eth0", 10))
    assert problems({"a": "eth0.10"}, {"eth0"}, probe, observed) == []
    assert probe.calls == 0


def test_an_omitted_macvlan_mtu_is_the_parents() -> None:
    nets = {
        "plain": {"driver": "macvlan", "parent": "eth0", "ipam": "none"},
        "tagged": {"driver": "macvlan", "parent": "eth1.10", "ipam": "none"},  # to be created on eth1
        "set": {"driver": "macvlan", "parent": "eth0", "ipam": "none", "mtu": 1400},
        "front": {},
    }
    spec = Spec.model_validate({"version": 1, "networks": nets})
    fitted = parent_mtus(spec, {"eth0": 9000, "eth1": 1480, "lo": 65536})
    assert {n: net.mtu for n, net in fitted.networks.items()} == {
        "plain": 9000,
        "tagged": 1480,
        "set": 1400,
        "front": None,  # a bridge network's default is drivers.bridge.desired.BRIDGE_MTU
    }
