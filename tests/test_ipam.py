"""`ipam.allocate(spec, previous_record, in_use)`: subnets and addresses, stable across runs."""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

import pytest

from reconciler import ipam
from reconciler.errors import HostConflict
from reconciler.spec import Spec
from reconciler.statedir import NetworkRecord, ScopeRecord

Net = ipaddress.IPv4Network


def make_spec(networks: dict[str, Any], containers: dict[str, Any]) -> Spec:
    return Spec.model_validate({"version": 1, "networks": networks, "containers": containers})


def on(*networks: str) -> dict[str, Any]:
    return {"networks": list(networks)}


def static(network: str, address: str) -> dict[str, Any]:
    return {"networks": {network: {"ipv4_address": address}}}


def addresses(record: ScopeRecord, network: str) -> dict[str, str]:
    return record.networks[network].addresses


FRONT = {"front": {"subnet": "10.1.0.0/24"}}


def test_first_free_addresses_follow_the_gateway_in_spec_order() -> None:
    record = ipam.allocate(make_spec(FRONT, {"a": on("front"), "b": on("front")}), ScopeRecord(), [])
    assert record.networks["front"].subnet == "10.1.0.0/24"
    assert addresses(record, "front") == {"a": "10.1.0.2", "b": "10.1.0.3"}


def test_explicit_gateway_is_never_handed_out() -> None:
    nets = {"front": {"subnet": "10.1.0.0/24", "gateway": "10.1.0.2"}}
    record = ipam.allocate(make_spec(nets, {"a": on("front"), "b": on("front")}), ScopeRecord(), [])
    assert addresses(record, "front") == {"a": "10.1.0.1", "b": "10.1.0.3"}


def test_static_address_is_honoured_and_never_handed_to_others() -> None:
    containers = {"a": on("front"), "b": static("front", "10.1.0.2"), "c": on("front")}
    record = ipam.allocate(make_spec(FRONT, containers), ScopeRecord(), [])
    assert addresses(record, "front") == {"a": "10.1.0.3", "b": "10.1.0.2", "c": "10.1.0.4"}


def test_only_members_of_a_network_get_its_addresses() -> None:
    nets = {**FRONT, "back": {"subnet": "10.2.0.0/24"}}
    containers = {"a": on("front"), "b": on("back", "front"), "c": on("back")}
    record = ipam.allocate(make_spec(nets, containers), ScopeRecord(), [])
    assert addresses(record, "front") == {"a": "10.1.0.2", "b": "10.1.0.3"}
    assert addresses(record, "back") == {"b": "10.2.0.2", "c": "10.2.0.3"}


def _spec_with(names: list[str]) -> Spec:
    return make_spec(FRONT, {n: on("front") for n in names})


@pytest.mark.parametrize("position", [0, 1, 2, 3])
def test_adding_one_container_does_not_re_address_anything_else(position: int) -> None:
    names = ["a", "b", "c"]
    first = ipam.allocate(_spec_with(names), ScopeRecord(), [])
    names.insert(position, "new")
    second = ipam.allocate(_spec_with(names), first, [])
    before, after = addresses(first, "front"), addresses(second, "front")
    assert {c: after[c] for c in before} == before
    assert after["new"] == "10.1.0.5"


def test_recorded_addresses_survive_removals_and_additions_before_them() -> None:
    first = ipam.allocate(_spec_with(["a", "b", "c"]), ScopeRecord(), [])
    assert addresses(first, "front") == {"a": "10.1.0.2", "b": "10.1.0.3", "c": "10.1.0.4"}
    # a leaves and two containers arrive in front of c: c and b keep theirs, a's address is free again.
    second = ipam.allocate(_spec_with(["x", "y", "c", "b"]), first, [])
    assert addresses(second, "front") == {"x": "10.1.0.2", "y": "10.1.0.5", "c": "10.1.0.4", "b": "10.1.0.3"}
    third = ipam.allocate(_spec_with(["c", "y", "b", "x"]), second, [])
    assert addresses(third, "front") == addresses(second, "front")


def test_static_address_wins_over_another_containers_recorded_one() -> None:
    first = ipam.allocate(_spec_with(["a", "b", "c"]), ScopeRecord(), [])
    assert addresses(first, "front") == {"a": "10.1.0.2", "b": "10.1.0.3", "c": "10.1.0.4"}
    spec = make_spec(FRONT, {"a": on("front"), "b": static("front", "10.1.0.2"), "c": on("front")})
    second = ipam.allocate(spec, first, [])
    # a moves to the first free address, which b has just given up; c is not disturbed.
    assert addresses(second, "front") == {"a": "10.1.0.3", "b": "10.1.0.2", "c": "10.1.0.4"}


def test_recorded_address_is_dropped_when_the_subnet_changes() -> None:
    first = ipam.allocate(_spec_with(["a"]), ScopeRecord(), [])
    spec = make_spec({"front": {"subnet": "10.9.0.0/24"}}, {"a": on("front")})
    second = ipam.allocate(spec, first, [])
    assert second.networks["front"].subnet == "10.9.0.0/24"
    assert addresses(second, "front") == {"a": "10.9.0.2"}


def test_recorded_address_that_became_the_gateway_moves() -> None:
    first = ipam.allocate(_spec_with(["a", "b"]), ScopeRecord(), [])
    spec = make_spec(
        {"front": {"subnet": "10.1.0.0/24", "gateway": "10.1.0.2"}}, {"a": on("front"), "b": on("front")}
    )
    second = ipam.allocate(spec, first, [])
    assert addresses(second, "front") == {"a": "10.1.0.1", "b": "10.1.0.3"}


def test_ip_range_bounds_dynamic_addresses_but_not_static_ones() -> None:
    nets = {"front": {"subnet": "10.1.0.0/24", "ip_range": "10.1.0.128/28"}}
    containers = {f"c{i}": on("front") for i in range(5)} | {"s": static("front", "10.1.0.5")}
    got = addresses(ipam.allocate(make_spec(nets, containers), ScopeRecord(), []), "front")
    dynamic = [ipaddress.IPv4Address(got[f"c{i}"]) for i in range(5)]
    assert all(a in Net("10.1.0.128/28") for a in dynamic)
    assert len(set(dynamic)) == 5
    assert dynamic == sorted(dynamic)
    assert got["s"] == "10.1.0.5"


def test_exhausted_ip_range_raises_host_conflict_naming_network_range_and_container() -> None:
    nets = {"front": {"subnet": "10.1.0.0/24", "ip_range": "10.1.0.128/29"}}
    containers = {f"c{i}": on("front") for i in range(9)}
    with pytest.raises(HostConflict) as caught:
        ipam.allocate(make_spec(nets, containers), ScopeRecord(), [])
    message = str(caught.value)
    assert message.startswith("network front: no free address left in 10.1.0.128/29 for c")
    assert "for c0" not in message


def test_exhausted_subnet_raises_host_conflict() -> None:
    # A /29 has six usable addresses; the gateway takes one, five containers fit, the sixth does not.
    nets = {"small": {"subnet": "10.1.0.0/29"}}
    fits = ipam.allocate(make_spec(nets, {f"c{i}": on("small") for i in range(5)}), ScopeRecord(), [])
    assert sorted(addresses(fits, "small").values()) == [f"10.1.0.{i}" for i in range(2, 7)]
    with pytest.raises(HostConflict, match=r"^network small: no free address left in 10\.1\.0\.0/29 for c5$"):
        ipam.allocate(make_spec(nets, {f"c{i}": on("small") for i in range(6)}), ScopeRecord(), [])


def test_slash_30_network_has_room_for_exactly_one_container() -> None:
    nets = {"p2p": {"subnet": "10.3.0.0/30"}}
    record = ipam.allocate(make_spec(nets, {"a": on("p2p")}), ScopeRecord(), [])
    assert addresses(record, "p2p") == {"a": "10.3.0.2"}
    with pytest.raises(HostConflict, match=r"for b$"):
        ipam.allocate(make_spec(nets, {"a": on("p2p"), "b": on("p2p")}), ScopeRecord(), [])


def test_auto_subnet_starts_with_dockers_first_pool() -> None:
    record = ipam.allocate(make_spec({"auto": {}}, {"a": on("auto")}), ScopeRecord(), [])
    assert record.networks["auto"].subnet == "172.17.0.0/16"
    assert addresses(record, "auto") == {"a": "172.17.0.2"}


def test_default_pools_are_dockers() -> None:
    pools = [str(p) for p in ipam.default_pools()]
    assert pools[:2] == ["172.17.0.0/16", "172.18.0.0/16"]
    assert pools[14] == "172.31.0.0/16"
    assert pools[15:17] == ["192.168.0.0/20", "192.168.16.0/20"]
    assert len(pools) == 15 + 16


def test_auto_subnet_skips_prefixes_in_use() -> None:
    in_use = [Net("172.17.0.0/16"), Net("172.18.5.0/24")]
    record = ipam.allocate(make_spec({"auto": {}}, {}), ScopeRecord(), in_use)
    assert record.networks["auto"].subnet == "172.19.0.0/16"


def test_auto_subnet_skips_subnets_of_other_networks_declared_later() -> None:
    nets = {"auto": {}, "fixed": {"subnet": "172.17.3.0/24"}}
    record = ipam.allocate(make_spec(nets, {}), ScopeRecord(), [])
    assert record.networks["auto"].subnet == "172.18.0.0/16"
    assert record.networks["fixed"].subnet == "172.17.3.0/24"


def test_auto_subnets_of_two_networks_differ() -> None:
    record = ipam.allocate(make_spec({"a": {}, "b": {}}, {}), ScopeRecord(), [])
    assert [record.networks[n].subnet for n in ("a", "b")] == ["172.17.0.0/16", "172.18.0.0/16"]


def test_auto_subnet_stays_stable_via_the_record() -> None:
    previous = ScopeRecord(networks={"auto": NetworkRecord("172.20.0.0/16", {"a": "172.20.0.9"})})
    record = ipam.allocate(make_spec({"auto": {}}, {"a": on("auto"), "b": on("auto")}), previous, [])
    assert record.networks["auto"].subnet == "172.20.0.0/16"
    assert addresses(record, "auto") == {"a": "172.20.0.9", "b": "172.20.0.2"}


def test_recorded_auto_subnet_moves_when_it_is_now_in_use() -> None:
    previous = ScopeRecord(networks={"auto": NetworkRecord("172.17.0.0/16", {"a": "172.17.0.9"})})
    record = ipam.allocate(make_spec({"auto": {}}, {"a": on("auto")}), previous, [Net("172.17.42.0/24")])
    assert record.networks["auto"].subnet == "172.18.0.0/16"
    assert addresses(record, "auto") == {"a": "172.18.0.2"}


def test_new_auto_network_declared_first_does_not_take_a_recorded_subnet() -> None:
    first = ipam.allocate(make_spec({"old": {}}, {"a": on("old")}), ScopeRecord(), [])
    assert first.networks["old"].subnet == "172.17.0.0/16"
    second = ipam.allocate(make_spec({"new": {}, "old": {}}, {"a": on("old")}), first, [])
    assert second.networks["old"].subnet == "172.17.0.0/16"
    assert addresses(second, "old") == addresses(first, "old")
    assert second.networks["new"].subnet == "172.18.0.0/16"


def test_every_pool_in_use_raises_host_conflict() -> None:
    in_use = [Net("172.16.0.0/12"), Net("192.168.0.0/16")]
    with pytest.raises(HostConflict, match=r"^network auto: every default address pool overlaps"):
        ipam.allocate(make_spec({"auto": {}}, {}), ScopeRecord(), in_use)


def test_adopted_namespaces_are_recorded() -> None:
    containers = {"a": {"networks": ["front"], "netns": "/proc/1/ns/net"}, "b": on("front")}
    record = ipam.allocate(make_spec(FRONT, containers), ScopeRecord(), [])
    assert record.adopted == {"a": "/proc/1/ns/net"}


def test_allocate_does_not_mutate_its_inputs() -> None:
    previous = ipam.allocate(_spec_with(["a", "b"]), ScopeRecord(), [])
    previous.networks["auto"] = NetworkRecord("172.17.0.0/16", {"c": "172.17.0.2"})
    in_use = [Net("172.18.0.0/16")]
    saved_previous, saved_in_use = copy.deepcopy(previous), list(in_use)
    spec = make_spec({**FRONT, "auto": {}, "more": {}}, {"c": on("auto", "more"), "b": on("front")})
    record = ipam.allocate(spec, previous, in_use)
    assert record.networks["more"].subnet == "172.19.0.0/16"
    assert previous == saved_previous and in_use == saved_in_use


def test_a_subnet_the_spec_no_longer_sets_does_not_linger() -> None:
    """Dropping `subnet:` gives what a first apply gives (the first free pool), not the old subnet;
    a subnet the pools gave stays (test_auto_subnet_stays_stable_via_the_record)."""
    containers = {"a": on("front")}
    first = ipam.allocate(make_spec(FRONT, containers), ScopeRecord(), [])
    dropped = ipam.allocate(make_spec({"front": {}}, containers), first, [])
    assert dropped == ipam.allocate(make_spec({"front": {}}, containers), ScopeRecord(), [])
    assert dropped.networks["front"].subnet == "172.17.0.0/16"


def test_an_ip_range_added_later_moves_the_addresses_outside_it() -> None:
    containers = {"a": on("front"), "b": on("front"), "c": static("front", "10.1.0.9")}
    first = ipam.allocate(make_spec(FRONT, containers), ScopeRecord(), [])
    assert addresses(first, "front") == {"a": "10.1.0.2", "b": "10.1.0.3", "c": "10.1.0.9"}
    ranged = {"front": {"subnet": "10.1.0.0/24", "ip_range": "10.1.0.128/25"}}
    later = ipam.allocate(make_spec(ranged, containers), first, [])
    assert later == ipam.allocate(make_spec(ranged, containers), ScopeRecord(), [])
    assert addresses(later, "front") == {"a": "10.1.0.128", "b": "10.1.0.129", "c": "10.1.0.9"}
    # Removing the range again keeps them: an address inside the range is one of the subnet's.
    again = ipam.allocate(make_spec(FRONT, containers), later, [])
    assert addresses(again, "front") == addresses(later, "front")
