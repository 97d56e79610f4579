"""IPv6 in IPAM and the spec: per-family subnets and addresses, the ULA pool, records of both eras."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from reconciler import ipam
from reconciler.spec import Spec, parse_port
from reconciler.statedir import ScopeRecord


def make_spec(networks: dict[str, Any], containers: dict[str, Any]) -> Spec:
    return Spec.model_validate({"version": 1, "networks": networks, "containers": containers})


DUAL = {"front": {"subnet": ["172.28.1.0/24", "fd00:28:1::/64"], "gateway": ["172.28.1.1", "fd00:28:1::1"]}}


def test_the_contract_spec_reads_per_family() -> None:
    net = make_spec(DUAL, {}).networks["front"]
    assert net.subnet == ipaddress.IPv4Network("172.28.1.0/24")
    assert net.subnet6 == ipaddress.IPv6Network("fd00:28:1::/64")
    assert net.gateway6 == ipaddress.IPv6Address("fd00:28:1::1")
    assert net.has_ipv4 and net.has_ipv6
    v6only = make_spec({"v": {"subnet": "fd00:28:9::/64"}}, {}).networks["v"]
    assert not v6only.has_ipv4 and v6only.has_ipv6
    legacy = make_spec({"n": {"subnet": "10.0.0.0/24"}}, {}).networks["n"]
    assert legacy.has_ipv4 and not legacy.has_ipv6 and legacy.subnet6 is None


def test_ports_take_bracketed_ipv6_host_addresses() -> None:
    (pm,) = parse_port("[2001:db8:100::1]:8443:443")
    assert pm.host_ip == ipaddress.IPv6Address("2001:db8:100::1") and pm.host_port == 8443
    assert str(pm) == "[2001:db8:100::1]:8443:443/tcp"
    assert parse_port("8080:80")[0].host_ip is None


def test_dual_stack_addresses_per_family_static_and_free() -> None:
    containers = {
        "web": {"networks": {"front": {"ipv4_address": "172.28.1.10", "ipv6_address": "fd00:28:1::10"}}},
        "db": {"networks": ["front"]},
    }
    rec = ipam.allocate(make_spec(DUAL, containers), ScopeRecord(), []).networks["front"]
    assert (rec.subnet, rec.subnet6) == ("172.28.1.0/24", "fd00:28:1::/64")
    assert rec.addresses == {"web": "172.28.1.10", "db": "172.28.1.2"}
    assert rec.addresses6 == {"web": "fd00:28:1::10", "db": "fd00:28:1::2"}


def test_ipv6_only_network_records_no_ipv4() -> None:
    spec = make_spec({"v": {"subnet": "fd00:28:9::/64"}}, {"a": {"networks": ["v"]}})
    rec = ipam.allocate(spec, ScopeRecord(), []).networks["v"]
    assert rec.subnet == "" and rec.addresses == {}
    assert rec.addresses6 == {"a": "fd00:28:9::2"}


def test_ula_pool_is_stable_and_avoids_taken_prefixes() -> None:
    spec = make_spec({"auto": {"ipv6": True}}, {"a": {"networks": ["auto"]}})
    first = ipam.allocate(spec, ScopeRecord(), []).networks["auto"]
    subnet = ipaddress.IPv6Network(first.subnet6)
    assert subnet.prefixlen == 64 and subnet.subnet_of(ipaddress.IPv6Network("fd00::/8"))
    # The same on another run and host, and kept from the record even when the pool's first choice
    # has since been taken by someone else.
    assert ipam.allocate(spec, ScopeRecord(), []).networks["auto"].subnet6 == first.subnet6
    previous = ipam.allocate(spec, ScopeRecord(), [])
    moved = ipam.allocate(spec, ScopeRecord(), [subnet]).networks["auto"]
    assert moved.subnet6 != first.subnet6 and not ipaddress.IPv6Network(moved.subnet6).overlaps(subnet)
    assert ipam.allocate(spec, previous, []).networks["auto"].subnet6 == first.subnet6
    # An IPv4 prefix in use does not count against IPv6 ones (overlaps() across families compares
    # raw integers: 0.0.0.0/0 "overlaps" every IPv6 prefix).
    given4 = make_spec({"auto": {"subnet": "10.0.0.0/24", "ipv6": True}}, {})
    everything4 = ipaddress.IPv4Network("0.0.0.0/0")
    assert ipam.allocate(given4, ScopeRecord(), [everything4]).networks["auto"].subnet6 == first.subnet6


def test_recorded_ula_subnet_is_dropped_when_the_spec_gives_one() -> None:
    auto = make_spec({"n": {"ipv6": True}}, {})
    previous = ipam.allocate(auto, ScopeRecord(), [])
    given = make_spec({"n": {"subnet": ["10.9.0.0/24", "fd00:9::/64"]}}, {})
    assert ipam.allocate(given, previous, []).networks["n"].subnet6 == "fd00:9::/64"


def test_old_records_load_and_ipv4_records_are_written_as_before() -> None:
    old = {
        "networks": {"front": {"subnet": "172.30.0.0/24", "addresses": {"db": "172.30.0.2"}}},
        "adopted": {},
    }
    record = ScopeRecord.from_json(old)
    assert record.networks["front"].subnet6 == "" and record.networks["front"].addresses6 == {}
    assert json.loads(json.dumps(record.to_json())) == old
    spec = make_spec(DUAL, {"db": {"networks": ["front"]}})
    dual = ipam.allocate(spec, ScopeRecord(), [])
    again = ScopeRecord.from_json(json.loads(json.dumps(dual.to_json())))
    assert again.networks["front"].addresses6 == {"db": "fd00:28:1::2"}
