"""Collisions between scopes, as pure functions: subnets held by other scopes or interfaces, and host
ports published by other scopes (reconciler/scopes.py)."""

from __future__ import annotations

import ipaddress
from typing import Any

from reconciler import names, scopes
from reconciler.ipam import HOST_SHIM
from reconciler.scopes import (
    HeldPort,
    LivePort,
    SubnetHolder,
    held_ports,
    port_conflicts,
    published,
    record_holders,
)
from reconciler.spec import Spec
from reconciler.statedir import NetworkRecord, ScopeRecord

PETS = ScopeRecord({"mybridge": NetworkRecord("172.17.0.0/16", {"db": "172.17.0.2", "web": "172.17.0.3"})})


def spec(networks: dict[str, Any], containers: dict[str, Any] | None = None) -> Spec:
    return Spec.model_validate(
        {"version": 1, "name": "third", "networks": networks, "containers": containers or {}}
    )


def subnet_conflicts(claimant: Spec, rec: ScopeRecord, holders: list[SubnetHolder]) -> list[str]:
    """The check on what a spec claims, as the engine and the compiled-spec cache hand it over."""
    return scopes.subnet_conflicts(scopes.claims(claimant), rec, holders)


def record(**subnets: str) -> ScopeRecord:
    return ScopeRecord({n: NetworkRecord(s) for n, s in subnets.items()})


def macvlan(parent: str, subnet: str = "192.168.10.0/24", **more: Any) -> dict[str, Any]:
    return {"driver": "macvlan", "parent": parent, "subnet": subnet, **more}


def test_a_subnet_inside_another_scopes_is_refused_naming_it() -> None:
    problems = subnet_conflicts(
        spec({"n": {"subnet": "172.17.0.0/24"}}), record(n="172.17.0.0/24"), record_holders({"pets": PETS})
    )
    assert problems == [
        "network n: subnet 172.17.0.0/24 overlaps 172.17.0.0/16 of network mybridge of scope pets"
        " (pool overlaps with another one)"
    ]


def test_a_disjoint_subnet_is_accepted() -> None:
    holders = record_holders({"pets": PETS})
    assert (
        subnet_conflicts(spec({"n": {"subnet": "172.18.0.0/16"}}), record(n="172.18.0.0/16"), holders) == []
    )


def test_a_foreign_interface_prefix_is_refused_naming_the_interface() -> None:
    docker0 = SubnetHolder(ipaddress.IPv4Network("172.17.0.0/16"), "interface docker0", interface=True)
    problems = subnet_conflicts(
        spec({"n": {"subnet": "172.17.5.0/24"}}), record(n="172.17.5.0/24"), [docker0]
    )
    assert len(problems) == 1 and "172.17.0.0/16 of interface docker0" in problems[0]


def test_a_scope_named_twice_by_record_and_by_its_bridge_is_reported_once() -> None:
    bridge = SubnetHolder(
        ipaddress.IPv4Network("172.17.0.0/16"), "network mybridge of scope pets", interface=True
    )
    holders = [*record_holders({"pets": PETS}), bridge]
    problems = subnet_conflicts(spec({"n": {"subnet": "172.17.0.0/24"}}), record(n="172.17.0.0/24"), holders)
    assert len(problems) == 1 and problems[0].count("scope pets") == 1


def test_macvlan_subnets_of_two_scopes_on_different_parents_are_separate_segments() -> None:
    other = {"a": ScopeRecord({"lan": NetworkRecord("192.168.10.0/24", parent="lan0")})}
    mine = spec({"lan": macvlan("lan1")})
    assert subnet_conflicts(mine, record(lan="192.168.10.0/24"), record_holders(other)) == []


def test_macvlan_subnets_of_two_scopes_on_one_parent_collide() -> None:
    other = {"a": ScopeRecord({"lan": NetworkRecord("192.168.10.0/24", parent="lan0")})}
    problems = subnet_conflicts(
        spec({"lan": macvlan("lan0")}), record(lan="192.168.10.0/24"), record_holders(other)
    )
    assert len(problems) == 1 and "network lan of scope a" in problems[0]


def test_macvlan_subnets_on_different_parents_collide_when_both_reach_the_host() -> None:
    shim = {HOST_SHIM: "192.168.10.200"}
    other = {"a": ScopeRecord({"lan": NetworkRecord("192.168.10.0/24", shim, parent="lan0")})}
    mine = spec({"lan": macvlan("lan1", host_access=True)})
    assert len(subnet_conflicts(mine, record(lan="192.168.10.0/24"), record_holders(other))) == 1


def test_a_macvlan_subnet_may_be_the_lan_its_parent_holds() -> None:
    lan0 = SubnetHolder(ipaddress.IPv4Network("192.168.10.0/24"), "interface lan0", interface=True)
    assert subnet_conflicts(spec({"lan": macvlan("lan0")}), record(lan="192.168.10.0/24"), [lan0]) == []


def test_a_bridge_subnet_overlapping_another_scopes_macvlan_collides() -> None:
    other = {"a": ScopeRecord({"lan": NetworkRecord("192.168.10.0/24", parent="lan0")})}
    problems = subnet_conflicts(
        spec({"n": {"subnet": "192.168.10.0/25"}}), record(n="192.168.10.0/25"), record_holders(other)
    )
    assert len(problems) == 1


def held(protocol: str, port: int, host_ip: str | None = None) -> HeldPort:
    return HeldPort(protocol, port, host_ip, "container web of scope pets")


def mine(*ports: str) -> list[HeldPort]:
    return published(spec({"n": {}}, {"c": {"networks": ["n"], "ports": list(ports)}}))


def test_a_published_port_is_refused_naming_the_container_that_holds_it() -> None:
    assert port_conflicts(mine("8000:80"), [held("tcp", 8000)]) == [
        "container c: host port 0.0.0.0:8000/tcp: port is already allocated: "
        "container web of scope pets publishes 0.0.0.0:8000/tcp"
    ]


def test_another_protocol_on_the_same_port_is_free() -> None:
    assert port_conflicts(mine("8000:80/udp"), [held("tcp", 8000)]) == []


def test_every_address_collides_with_one_address_both_ways() -> None:
    assert len(port_conflicts(mine("127.0.0.1:8000:80"), [held("tcp", 8000)])) == 1
    assert len(port_conflicts(mine("8000:80"), [held("tcp", 8000, "127.0.0.1")])) == 1


def test_two_host_addresses_do_not_collide() -> None:
    assert port_conflicts(mine("127.0.0.2:8000:80"), [held("tcp", 8000, "127.0.0.1")]) == []
    assert len(port_conflicts(mine("127.0.0.1:8000:80"), [held("tcp", 8000, "127.0.0.1")])) == 1


def test_a_range_reports_the_ports_taken_in_one_line() -> None:
    problems = port_conflicts(mine("9000-9002:9000-9002"), [held("tcp", 9001), held("tcp", 9005)])
    assert [p.split(": ")[1] for p in problems] == ["host port 0.0.0.0:9001/tcp"]
    problems = port_conflicts(mine("9000-9099:9000-9099"), [held("tcp", p) for p in range(9000, 9100)])
    assert problems == [
        "container c: host ports 0.0.0.0:9000/tcp, 0.0.0.0:9001/tcp, 0.0.0.0:9002/tcp and 97 more: "
        "ports are already allocated by container web of scope pets"
    ]


def test_live_ports_are_named_by_the_other_scopes_record() -> None:
    live = [
        LivePort("pets", "tcp", 8000, None, "172.17.0.3"),
        LivePort("pets", "udp", 53, "127.0.0.1", "172.17.0.9"),
        LivePort("mesh", "tcp", 8080, None, ""),
    ]
    owners = [p.owner for p in held_ports(live, {"pets": PETS})]
    assert owners == ["container web of scope pets", "scope pets (to 172.17.0.9)", "a service of scope mesh"]


def test_scope_of_table_inverts_nft_table() -> None:
    for scope in ("default", "pets", "a_b"):
        assert names.scope_of_table(names.nft_table(scope)) == scope
    assert names.scope_of_table("filter") is None


def test_an_ipv6_subnet_inside_another_scopes_is_refused_and_families_never_mix() -> None:
    theirs = ScopeRecord({"front": NetworkRecord("10.8.0.0/24", subnet6="fd00:28::/32")})
    mine = ScopeRecord({"n": NetworkRecord("", subnet6="fd00:28:1::/64")})
    problems = subnet_conflicts(
        spec({"n": {"subnet": "fd00:28:1::/64"}}), mine, record_holders({"pets": theirs})
    )
    assert problems == [
        "network n: subnet fd00:28:1::/64 overlaps fd00:28::/32 of network front of scope pets"
        " (pool overlaps with another one)"
    ]
    # 0.0.0.0/0 "overlaps" every IPv6 prefix by raw integers; by family it overlaps none.
    everything4 = SubnetHolder(ipaddress.IPv4Network("0.0.0.0/0"), "interface wide", interface=True)
    assert subnet_conflicts(spec({"n": {"subnet": "fd00:28:1::/64"}}), mine, [everything4]) == []
