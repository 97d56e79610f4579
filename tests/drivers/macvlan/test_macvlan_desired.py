"""The macvlan driver's desired objects: children of the parent, VLAN parents, host shims, routes."""

from __future__ import annotations

from typing import Any

from test_desired import build, elements, get, hosts_entries, iface, make_spec

from reconciler.desired import desired_state
from reconciler.dns.records import scope_records
from reconciler.model import Iface, MacvlanShim, Route, Vlan


def mv(parent: str, subnet: str | None = None, **options: Any) -> dict[str, Any]:
    return {"driver": "macvlan", "parent": parent, **({"subnet": subnet} if subnet else {}), **options}


def test_macvlan_child_has_no_host_end_and_a_mac_from_its_address() -> None:
    spec = make_spec(
        {"lan": mv("eth0", "192.168.10.0/24", mode="private", mtu=1400)}, {"a": {"networks": ["lan"]}}
    )
    state, _ = build(spec)
    assert iface(state, "a/lan") == Iface(
        container="a",
        network="lan",
        netns="/run/netns/a",
        ifname="eth0",
        host_ifname="",
        bridge=None,
        address="192.168.10.1/24",
        mac="02:42:c0:a8:0a:01",
        mtu=1400,
        parent="eth0",
        mode="private",
    )
    # No bridge, no NAT, no firewall table, no forwarding, and no gateway: no default route.
    assert {kind for kind, _ in state.resources} == {"netns", "iface", "hosts"}


def test_macvlan_gateway_gives_the_default_route_and_a_slash32_reaches_it_onlink() -> None:
    nets = {
        "lan": mv("eth0", "192.168.10.0/24", gateway="192.168.10.1"),
        "one": mv("eth1", "203.0.113.7/32", gateway="203.0.113.1"),
    }
    state, _ = build(make_spec(nets, {"a": {"networks": ["lan"]}, "b": {"networks": ["one"]}}))
    assert get(state, "route", "a") == Route("a", "/run/netns/a", "192.168.10.1", "eth0")
    assert get(state, "route", "b") == Route("b", "/run/netns/b", "203.0.113.1", "eth0", onlink=True)
    assert iface(state, "b/one").address == "203.0.113.7/32"


def test_default_route_skips_a_macvlan_network_without_gateway() -> None:
    nets = {"lan": mv("eth0", "192.168.10.0/24"), "front": {"subnet": "10.1.0.0/24"}}
    state, _ = build(make_spec(nets, {"a": {"networks": ["lan", "front"], "ports": ["8080:80"]}}))
    assert get(state, "route", "a") == Route("a", "/run/netns/a", "10.1.0.1", "eth1")
    # Ports go to the bridge address; the macvlan subnet is neither masqueraded nor listed as ours.
    assert elements(state, "ports_addr") == [[{"concat": ["tcp", 8080]}, "10.1.0.2"]]
    assert elements(state, "masq_subnets") == [{"prefix": {"addr": "10.1.0.0", "len": 24}}]
    assert elements(state, "bridges") == ["nr-front"]


def test_vlan_parent_is_wanted_unless_it_exists_as_someone_elses() -> None:
    spec = make_spec({"v10": mv("eth0.10", "10.10.0.0/24"), "v10b": mv("eth0.10", "10.11.0.0/24")}, {})
    state, record = build(spec)
    assert state.of_kind("vlan") == [Vlan("eth0.10", "eth0", 10)]
    existing = desired_state(spec, record, "default", frozenset({"eth0.10"}))
    assert existing.of_kind("vlan") == []


def test_host_access_shim_routes_to_every_container_of_its_network() -> None:
    nets = {"lan": mv("eth0", "192.168.10.0/24", gateway="192.168.10.1", host_access=True)}
    state, _ = build(make_spec(nets, {"a": {"networks": ["lan"]}, "b": {"networks": ["lan"]}}))
    shim = get(state, "shim", "lan")
    assert isinstance(shim, MacvlanShim)
    assert (shim.parent, shim.address, shim.mac) == ("eth0", "192.168.10.4/32", "02:42:c0:a8:0a:04")
    assert shim.routes == "192.168.10.2/32,192.168.10.3/32"
    assert shim.ifname.startswith("nrm") and len(shim.ifname) <= 15


def test_network_without_ipam_gives_an_unaddressed_interface_with_a_stable_mac() -> None:
    spec = make_spec({"l2": mv("eth0", ipam="none")}, {"a": {"networks": ["l2"]}, "b": {"networks": ["l2"]}})
    state, _ = build(spec)
    a, b = iface(state, "a/l2"), iface(state, "b/l2")
    assert a.address is None and a.mac and a.mac.startswith("02:") and a.mac != b.mac
    assert a.mac == iface(build(spec)[0], "a/l2").mac
    assert ("route", "a") not in state.resources
    assert hosts_entries(state, "a") == []


def test_passthru_child_keeps_the_parents_mac() -> None:
    state, _ = build(
        make_spec({"pt": mv("eth0", "10.9.0.0/24", mode="passthru")}, {"a": {"networks": ["pt"]}})
    )
    assert iface(state, "a/pt").mac is None


def test_macvlan_members_resolve_each_other() -> None:
    nets = {"lan": mv("eth0", "192.168.10.0/24")}
    spec = make_spec(nets, {"a": {"networks": ["lan"]}, "b": {"networks": {"lan": {"aliases": ["bee"]}}}})
    state, record = build(spec)
    assert hosts_entries(state, "a") == ["192.168.10.1\ta"]  # peers are the resolver's
    lines = scope_records(spec, record, state, {})["networks"]["lan"]
    assert lines == [["192.168.10.1", "a"], ["192.168.10.2", "b", "bee"]]


def test_dual_stack_macvlan_has_an_address_and_a_default_route_per_family() -> None:
    nets = {
        "lan": mv("eth0", ["192.168.10.0/24", "2001:db8:10::/64"], gateway=["192.168.10.1", "2001:db8:10::1"])
    }
    containers = {"a": {"networks": {"lan": {"ipv6_address": "2001:db8:10::a"}}}, "b": {"networks": ["lan"]}}
    state, _ = build(make_spec(nets, containers))
    assert iface(state, "a/lan").address == "192.168.10.2/24,2001:db8:10::a/64"
    assert iface(state, "b/lan").address == "192.168.10.3/24,2001:db8:10::2/64"
    assert get(state, "route", "a ipv6") == Route("a", "/run/netns/a", "2001:db8:10::1", "eth0")
    assert hosts_entries(state, "b")[-2:] == ["192.168.10.3\tb", "2001:db8:10::2\tb"]
    # Not routed through the host: no forwarding of either family, no firewall.
    assert {kind for kind, _ in state.resources} == {"netns", "iface", "route", "hosts"}


def test_ipv6_only_macvlan_has_no_ipv4_and_no_route_without_a_gateway() -> None:
    state, _ = build(make_spec({"v6": mv("eth0", "2001:db8:10::/64")}, {"a": {"networks": ["v6"]}}))
    a = iface(state, "a/v6")
    assert a.address == "2001:db8:10::1/64"
    assert a.mac and a.mac.startswith("02:")  # from names: there is no IPv4 address to derive it from
    assert [k for k in state.resources if k[0] == "route"] == []


def test_macvlan_slash128_and_slash127_are_usable_whole() -> None:
    nets = {
        "one": mv("eth0", "2001:db8:7::7/128", gateway="2001:db8:7::1"),
        "p2p": mv("eth1", "2001:db8:8::/127"),
    }
    containers = {"a": {"networks": ["one"]}, "b": {"networks": ["p2p"]}, "c": {"networks": ["p2p"]}}
    state, _ = build(make_spec(nets, containers))
    assert iface(state, "a/one").address == "2001:db8:7::7/128"
    assert get(state, "route", "a ipv6") == Route("a", "/run/netns/a", "2001:db8:7::1", "eth0", onlink=True)
    assert [iface(state, f"{c}/p2p").address for c in "bc"] == ["2001:db8:8::/127", "2001:db8:8::1/127"]


def test_same_ipv6_subnet_on_two_parents_and_a_dual_stack_shim() -> None:
    nets = {
        "lan0": mv("eth0", ["10.5.0.0/24", "2001:db8:5::/64"], host_access=True),
        "lan1": mv("eth1", "2001:db8:5::/64"),
    }
    state, _ = build(make_spec(nets, {"a": {"networks": ["lan0"]}, "b": {"networks": ["lan1"]}}))
    assert iface(state, "a/lan0").address == "10.5.0.1/24,2001:db8:5::1/64"
    assert iface(state, "b/lan1").address == "2001:db8:5::1/64"
    shim = get(state, "shim", "lan0")
    assert isinstance(shim, MacvlanShim)
    assert (shim.address, shim.routes) == ("10.5.0.2/32,2001:db8:5::2/128", "10.5.0.1/32,2001:db8:5::1/128")


def test_a_link_local_ipv6_gateway_gives_a_plain_default_route() -> None:
    state, _ = build(
        make_spec({"lan": mv("eth0", "2001:db8:10::/64", gateway="fe80::1")}, {"a": {"networks": ["lan"]}})
    )
    assert get(state, "route", "a ipv6") == Route("a", "/run/netns/a", "fe80::1", "eth0")
