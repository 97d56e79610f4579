"""The driver registry: every driver a spec can name, each resource kind executed by exactly one
owner, and the kinds' cascade declarations naming real kinds."""

from __future__ import annotations

from reconciler.apply import executors
from reconciler.drivers.overlay.model import Fdb, Neigh, Vxlan
from reconciler.drivers.overlay.wgmodel import Wireguard
from reconciler.drivers.registry import CHILD_MODES, CHILDREN, DRIVERS, driver_of
from reconciler.model import (
    KIND_ORDER,
    LINK,
    Bridge,
    HostsFile,
    Iface,
    MacvlanShim,
    Netns,
    NftElement,
    NftTable,
    Route,
    Sysctl,
    Vlan,
)
from reconciler.policy.nsfw import NsPolicy
from reconciler.spec import DRIVERS_SUPPORTED, Network

KINDS = (
    Sysctl,
    Bridge,
    Vlan,
    MacvlanShim,
    Wireguard,
    Vxlan,
    Fdb,
    Neigh,
    Netns,
    Iface,
    Route,
    HostsFile,
    NftTable,
    NftElement,
    NsPolicy,
)


def test_every_driver_the_spec_knows_is_registered_under_its_name() -> None:
    assert set(DRIVERS) == DRIVERS_SUPPORTED
    assert all(d.name == name for name, d in DRIVERS.items())
    assert driver_of(Network.model_validate({"driver": "macvlan", "parent": "eth0"})) is DRIVERS["macvlan"]


def test_each_kind_has_exactly_one_executor_owner() -> None:
    owned = [kind for d in DRIVERS.values() for kind in d.executors()]
    assert len(owned) == len(set(owned))
    # nft kinds run in the one transaction of apply/firewall.py, not through the executors.
    assert set(executors()) == {k for k in KIND_ORDER if not k.startswith("nft-")}


def test_child_interfaces_find_their_driver_by_link_kind_and_mode() -> None:
    assert set(CHILDREN) == {"macvlan"}
    assert {"bridge", "private", "vepa", "passthru"} <= set(CHILD_MODES)
    assert all(d is DRIVERS["macvlan"] for d in CHILD_MODES.values())


def test_cascade_declarations_name_existing_kinds_and_fields() -> None:
    kinds = {k.kind for k in KINDS}
    assert kinds == set(KIND_ORDER)
    for cls in KINDS:
        fields = set(cls.__dataclass_fields__)
        for rule in cls.follows:
            assert rule.kind in kinds | {LINK}, (cls.kind, rule)
            assert set(rule.by) <= fields, (cls.kind, rule)
            assert rule.op in ("create", "change", "replace")


def test_each_driver_declares_the_kinds_it_executes() -> None:
    for driver in DRIVERS.values():
        assert sorted(driver.executors()) == sorted(driver.kinds), driver.name
    owned = [kind for driver in DRIVERS.values() for kind in driver.kinds]
    assert len(owned) == len(set(owned))  # one owner per kind
