"""IPAM on macvlan networks: no gateway unless given, per-parent subnets, the host shim's address."""

from __future__ import annotations

from typing import Any

import pytest
from test_ipam import addresses, make_spec, on

from reconciler import ipam
from reconciler.errors import HostConflict
from reconciler.statedir import ScopeRecord


def macvlan(parent: str, subnet: str, **options: Any) -> dict[str, Any]:
    return {"driver": "macvlan", "parent": parent, "subnet": subnet, **options}


def test_macvlan_without_gateway_hands_out_the_first_address() -> None:
    spec = make_spec({"lan": macvlan("eth0", "10.5.0.0/29")}, {"a": on("lan"), "b": on("lan")})
    assert addresses(ipam.allocate(spec, ScopeRecord(), []), "lan") == {"a": "10.5.0.1", "b": "10.5.0.2"}


def test_macvlan_with_gateway_skips_it() -> None:
    spec = make_spec({"lan": macvlan("eth0", "10.5.0.0/29", gateway="10.5.0.1")}, {"a": on("lan")})
    assert addresses(ipam.allocate(spec, ScopeRecord(), []), "lan") == {"a": "10.5.0.2"}


def test_same_subnet_on_two_parents_is_allocated_per_network() -> None:
    nets = {"seg0": macvlan("lan0", "10.5.0.0/24"), "seg1": macvlan("lan1", "10.5.0.0/24")}
    record = ipam.allocate(make_spec(nets, {"a": on("seg0"), "b": on("seg1")}), ScopeRecord(), [])
    assert addresses(record, "seg0") == {"a": "10.5.0.1"}
    assert addresses(record, "seg1") == {"b": "10.5.0.1"}


def test_point_to_point_and_single_address_networks_use_every_address() -> None:
    nets = {"p2p": macvlan("lan0", "10.6.0.0/31"), "one": macvlan("lan1", "10.7.0.9/32", gateway="10.7.0.1")}
    record = ipam.allocate(make_spec(nets, {"a": on("p2p", "one"), "b": on("p2p")}), ScopeRecord(), [])
    assert addresses(record, "p2p") == {"a": "10.6.0.0", "b": "10.6.0.1"}
    assert addresses(record, "one") == {"a": "10.7.0.9"}


def test_single_address_network_is_full_after_one_container() -> None:
    spec = make_spec({"one": macvlan("lan1", "10.7.0.9/32")}, {"a": on("one"), "b": on("one")})
    with pytest.raises(HostConflict, match=r"no free address left in 10\.7\.0\.9/32 for b"):
        ipam.allocate(spec, ScopeRecord(), [])


def test_host_shim_takes_an_address_after_the_containers_and_keeps_it() -> None:
    nets = {"lan": macvlan("eth0", "10.5.0.0/24", gateway="10.5.0.1", host_access=True)}
    record = ipam.allocate(make_spec(nets, {"a": on("lan")}), ScopeRecord(), [])
    assert addresses(record, "lan") == {"a": "10.5.0.2", ipam.HOST_SHIM: "10.5.0.3"}
    record = ipam.allocate(make_spec(nets, {"a": on("lan"), "b": on("lan")}), record, [])
    assert addresses(record, "lan") == {"a": "10.5.0.2", "b": "10.5.0.4", ipam.HOST_SHIM: "10.5.0.3"}


def test_network_without_ipam_gets_no_record() -> None:
    spec = make_spec({"l2": {"driver": "macvlan", "parent": "eth0", "ipam": "none"}}, {"a": on("l2")})
    assert ipam.allocate(spec, ScopeRecord(), []).networks == {}
