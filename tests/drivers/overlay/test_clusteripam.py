"""Cluster-wide IPAM: every host computes the same addresses, and the lock pins them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reconciler.drivers.overlay import clusteripam
from reconciler.errors import HostConflict, ReconcilerError
from reconciler.spec import Spec


def make(containers: dict[str, Any], services: dict[str, Any] | None = None, **net: Any) -> Spec:
    return Spec.model_validate(
        {
            "version": 1,
            "hosts": {"host-a": {"address": "192.0.2.11"}, "host-b": {"address": "192.0.2.12"}},
            "networks": {"pets": {"driver": "overlay", "subnet": "10.200.0.0/24", **net}},
            "containers": {c: {"host": h, "networks": ["pets"]} for c, h in containers.items()},
            "services": services or {},
        }
    )


def addresses(alloc: clusteripam.Allocation) -> dict[str, str]:
    a = alloc["pets"]
    return {
        **a.containers,
        **{f"svc:{k}": v for k, v in a.services.items()},
        **{f"host:{k}": v for k, v in a.hosts.items()},
    }


def test_every_endpoint_gets_a_distinct_usable_address() -> None:
    spec = make({f"c{i}": "host-a" for i in range(40)}, {"api": {"network": "pets", "backends": ["c1"]}})
    got = addresses(clusteripam.allocate(spec, None))
    assert len(got) == 40 + 1 + 2
    assert len(set(got.values())) == len(got)
    assert not {"10.200.0.0", "10.200.0.1", "10.200.0.255"} & set(got.values())


def test_allocation_ignores_spec_order() -> None:
    one = make({"db": "host-b", "web": "host-a", "cache": "host-b"})
    two = make({"cache": "host-b", "web": "host-a", "db": "host-b"})
    assert addresses(clusteripam.allocate(one, None)) == addresses(clusteripam.allocate(two, None))


def test_static_address_wins_over_lock_and_hash() -> None:
    spec = Spec.model_validate(
        {
            "version": 1,
            "networks": {"pets": {"driver": "overlay", "subnet": "10.200.0.0/24"}},
            "containers": {"db": {"networks": {"pets": {"ipv4_address": "10.200.0.9"}}}},
        }
    )
    lock = {"pets": clusteripam.OverlayAllocation("10.200.0.0/24", containers={"db": "10.200.0.50"})}
    assert clusteripam.allocate(spec, lock)["pets"].containers["db"] == "10.200.0.9"


def test_lock_keeps_addresses_when_containers_come_and_go() -> None:
    before = make({"db": "host-b", "web": "host-a"})
    lock = clusteripam.allocate(before, None)
    # A locked address that hashing would never pick: the lock still wins.
    locked_db = lock["pets"].containers["db"]
    lock["pets"].containers["web"] = "10.200.0.77"
    after = make({"aaa": "host-a", "web": "host-a", "db": "host-b", "zzz": "host-b"})
    again = clusteripam.allocate(after, lock)["pets"]
    assert again.containers["db"] == locked_db
    assert again.containers["web"] == "10.200.0.77"
    assert len(set(again.containers.values())) == 4
    removed = clusteripam.allocate(make({"web": "host-a"}), lock)["pets"]
    assert removed.containers == {"web": "10.200.0.77"}


def test_new_subnet_voids_the_lock() -> None:
    lock = clusteripam.allocate(make({"db": "host-b"}), None)
    moved = clusteripam.allocate(make({"db": "host-b"}, subnet="10.99.0.0/24"), lock)["pets"]
    assert moved.subnet == "10.99.0.0/24" and moved.containers["db"].startswith("10.99.0.")


def test_ip_range_bounds_allocation_and_exhaustion_is_an_error() -> None:
    spec = make({"a": "host-a", "b": "host-a"}, ip_range="10.200.0.128/30")
    got = addresses(clusteripam.allocate(spec, None))
    assert set(got.values()) == {"10.200.0.128", "10.200.0.129", "10.200.0.130", "10.200.0.131"}
    with pytest.raises(HostConflict, match="no free address"):
        clusteripam.allocate(
            make({"a": "host-a", "b": "host-a", "c": "host-a"}, ip_range="10.200.0.128/30"), None
        )


def test_an_ip_range_added_later_moves_locked_addresses_into_it() -> None:
    lock = clusteripam.allocate(make({"db": "host-b", "web": "host-a"}), None)
    lock["pets"].containers["web"] = "10.200.0.10"  # outside the range below
    ranged = make({"db": "host-b", "web": "host-a"}, ip_range="10.200.0.128/25")
    assert addresses(clusteripam.allocate(ranged, lock)) == addresses(clusteripam.allocate(ranged, None))


def test_staleness_names_what_changed(tmp_path: Path) -> None:
    spec = make({"db": "host-b"})
    assert clusteripam.staleness(spec, None) == ["the lock file is missing"]
    lock = clusteripam.allocate(spec, None)
    assert clusteripam.staleness(spec, lock) == []
    grown = make({"db": "host-b", "web": "host-a"})
    problems = clusteripam.staleness(grown, lock)
    assert len(problems) == 1 and "container web: unlocked ->" in problems[0]


def test_lock_file_round_trip_and_errors(tmp_path: Path) -> None:
    spec = make({"db": "host-b", "web": "host-a"}, {"api": {"network": "pets", "backends": ["web"]}})
    alloc = clusteripam.allocate(spec, None)
    path = clusteripam.lock_path(tmp_path / "spec.yaml")
    assert path.name == "spec.yaml.lock"
    assert clusteripam.read_lock(path) is None
    path.write_text(clusteripam.to_json(alloc))
    assert clusteripam.read_lock(path) == alloc
    path.write_text('{"version": 1, "networks": {"pets": {"subnet": "nonsense"}}}')
    with pytest.raises(ReconcilerError, match="malformed"):
        clusteripam.read_lock(path)
    path.write_text("{")
    with pytest.raises(ReconcilerError, match="unreadable"):
        clusteripam.read_lock(path)


def test_a_directory_of_specs_reads_every_lock_in_it(tmp_path: Path) -> None:
    spec = make({"db": "host-b", "web": "host-a"})
    lock, warning = clusteripam.pinned(tmp_path, spec)
    assert lock is None and warning is not None and "*.lock not found" in warning and "not pinned" in warning
    alloc = clusteripam.allocate(spec, None)
    (tmp_path / "pets.yaml.lock").write_text(clusteripam.to_json(alloc))
    assert clusteripam.lock_files(tmp_path) == [tmp_path / "pets.yaml.lock"]
    assert clusteripam.pinned(tmp_path, spec) == (alloc, None)
    stale, warning = clusteripam.pinned(tmp_path, make({"db": "host-b", "web": "host-a", "x": "host-a"}))
    assert stale == alloc and warning is not None and "is stale (network pets: container x" in warning
    # `reconciler lock DIR` writes inside the directory, where the lock is read from.
    assert clusteripam.lock_path(tmp_path) == tmp_path / "spec.lock"
    (tmp_path / "spec.lock").write_text(clusteripam.to_json(alloc))
    with pytest.raises(ReconcilerError, match="both pin network pets"):
        clusteripam.read_locks(tmp_path)
