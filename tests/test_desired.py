"""`desired.desired_state(spec, record, scope)`: every kernel object the spec implies, named and addressed."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler import ipam
from reconciler.desired import desired_state
from reconciler.firewall.decl import element_json
from reconciler.firewall.layout import tables
from reconciler.model import (
    Bridge,
    HostsFile,
    Iface,
    Key,
    Netns,
    NftElement,
    NftTable,
    Resource,
    Route,
    State,
)
from reconciler.spec import Spec
from reconciler.statedir import ScopeRecord

HEADER = "# managed by netreconciler (scope default); edits are overwritten"
TABLE = "netreconciler"


def make_spec(networks: dict[str, Any], containers: dict[str, Any], name: str | None = None) -> Spec:
    return Spec.model_validate({"version": 1, "name": name, "networks": networks, "containers": containers})


def build(spec: Spec, previous: ScopeRecord | None = None) -> tuple[State, ScopeRecord]:
    record = ipam.allocate(spec, previous or ScopeRecord(), [])
    return desired_state(spec, record, spec.name or "default"), record


def get(state: State, kind: str, id_: str) -> Resource:
    return state.resources[(kind, id_)]


def iface(state: State, id_: str) -> Iface:
    res = get(state, "iface", id_)
    assert isinstance(res, Iface)
    return res


def elements(state: State, set_name: str, family: str = "inet") -> list[Any]:
    return [
        r.value
        for r in state.resources.values()
        if isinstance(r, NftElement) and r.family == family and r.set == set_name
    ]


def hosts_entries(state: State, container: str) -> list[str]:
    res = get(state, "hosts", container)
    assert isinstance(res, HostsFile)
    lines = res.content.splitlines()
    assert lines[:3] == [HEADER, "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    assert res.content.endswith("\n")
    return lines[3:]


THREE = {"a": {"subnet": "10.1.0.0/24"}, "b": {"subnet": "10.2.0.0/24"}, "c": {"subnet": "10.3.0.0/24"}}


def test_empty_spec_wants_nothing() -> None:
    state, _ = build(make_spec({}, {}))
    assert state.resources == {}


def test_interface_names_follow_declaration_order() -> None:
    spec = make_spec(THREE, {"x": {"networks": {"c": None, "a": None}}, "y": {"networks": ["b", "a", "c"]}})
    state, _ = build(spec)
    assert [iface(state, i).ifname for i in ("x/c", "x/a")] == ["eth0", "eth1"]
    assert [iface(state, i).ifname for i in ("y/b", "y/a", "y/c")] == ["eth0", "eth1", "eth2"]


def test_interface_carries_its_address_mac_bridge_and_mtu() -> None:
    spec = make_spec(
        {"front": {"subnet": "10.1.0.0/24", "mtu": 1400}},
        {"web": {"networks": {"front": {"ipv4_address": "10.1.0.10"}}}},
    )
    state, _ = build(spec)
    assert iface(state, "web/front") == Iface(
        container="web",
        network="front",
        netns="/run/netns/web",
        ifname="eth0",
        host_ifname=iface(state, "web/front").host_ifname,
        bridge="nr-front",
        address="10.1.0.10/24",
        mac="02:42:0a:01:00:0a",
        mtu=1400,
    )
    assert get(state, "bridge", "front") == Bridge("front", "nr-front", "10.1.0.1/24", 1400)
    assert get(state, "netns", "web") == Netns("web", "/run/netns/web")


def test_an_omitted_mtu_is_the_bridge_default_not_dont_care() -> None:
    """Without `mtu` the bridge and the veths are 1500, so removing `mtu: 1400` from a spec takes
    them back (a fresh apply gives 1500 too)."""
    state, _ = build(make_spec({"front": {"subnet": "10.1.0.0/24"}}, {"web": {"networks": ["front"]}}))
    assert get(state, "bridge", "front") == Bridge("front", "nr-front", "10.1.0.1/24", 1500)
    assert iface(state, "web/front").mtu == 1500


def test_adopted_namespace_is_used_as_is() -> None:
    spec = make_spec({"front": {}}, {"app": {"networks": ["front"], "netns": "/proc/4242/ns/net"}})
    state, _ = build(spec)
    assert get(state, "netns", "app") == Netns("app", "/proc/4242/ns/net", adopted=True)
    assert iface(state, "app/front").netns == "/proc/4242/ns/net"
    route = get(state, "route", "app")
    assert isinstance(route, Route) and route.netns == "/proc/4242/ns/net"


LONG = "n" * 63


@pytest.mark.parametrize("scope", [None, "other"])
def test_interface_names_fit_the_kernel_and_are_deterministic(scope: str | None) -> None:
    containers = {"c" * 63: {"networks": [LONG, "front"]}, "web": {"networks": [LONG, "front"]}}
    spec = make_spec({LONG: {}, "front": {}}, containers, name=scope)
    first, _ = build(spec)
    second, _ = build(spec)
    assert first == second
    host = [r.host_ifname for r in first.of_kind("iface") if isinstance(r, Iface)]
    bridges = [r.ifname for r in first.of_kind("bridge") if isinstance(r, Bridge)]
    assert len(host) == 4 and len(set(host)) == 4
    assert len(set(bridges)) == 2
    for name in host + bridges:
        assert 0 < len(name) <= 15, name
    assert all(name.startswith("nrv") for name in host)
    assert all(name.startswith("nr-") for name in bridges)


def test_host_names_depend_on_the_scope() -> None:
    containers = {"web": {"networks": ["front"]}}
    default, _ = build(make_spec({"front": {}}, containers))
    other, _ = build(make_spec({"front": {}}, containers, name="other"))
    assert iface(default, "web/front").host_ifname != iface(other, "web/front").host_ifname
    assert get(default, "bridge", "front") == Bridge("front", "nr-front", "172.17.0.1/16", 1500)
    other_bridge = get(other, "bridge", "front")
    assert isinstance(other_bridge, Bridge) and other_bridge.ifname != "nr-front"


def test_default_route_goes_via_the_first_non_internal_network() -> None:
    nets = {
        "back": {"subnet": "10.2.0.0/24", "internal": True},
        "front": {"subnet": "10.1.0.0/24", "gateway": "10.1.0.254"},
        "side": {"subnet": "10.3.0.0/24"},
    }
    state, _ = build(make_spec(nets, {"web": {"networks": ["back", "front", "side"]}}))
    assert get(state, "route", "web") == Route("web", "/run/netns/web", "10.1.0.254", "eth1")


def test_internal_only_container_gets_no_route_and_host_no_forwarding() -> None:
    nets = {"back": {"subnet": "10.2.0.0/24", "internal": True}}
    state, _ = build(make_spec(nets, {"db": {"networks": ["back"]}}))
    assert ("iface", "db/back") in state.resources
    assert state.of_kind("route") == []
    assert state.of_kind("sysctl") == []


def test_forwarding_is_wanted_as_soon_as_one_network_leads_out() -> None:
    nets = {"back": {"internal": True}, "front": {}}
    state, _ = build(make_spec(nets, {"db": {"networks": ["back"]}}))
    assert state.of_kind("route") == []
    assert [(r.key, r.describe()) for r in state.of_kind("sysctl")] == [
        (("sysctl", "net.ipv4.ip_forward"), {"name": "net.ipv4.ip_forward", "value": "1"})
    ]


def test_hosts_files_hold_only_the_containers_own_names() -> None:
    """Peers resolve through the resolver (tests/test_dns_records.py): a hosts file lists its own names."""
    nets = {"n1": {"subnet": "10.1.0.0/24"}, "n2": {"subnet": "10.2.0.0/24"}}
    containers = {"a": {"networks": ["n1"]}, "b": {"networks": {"n1": None, "n2": {"aliases": ["bee"]}}}}
    state, _ = build(make_spec(nets, containers))
    assert hosts_entries(state, "a") == ["10.1.0.2\ta"]
    # An alias belongs to one network: the line of that network's address.
    assert hosts_entries(state, "b") == ["10.1.0.3\tb", "10.2.0.2\tb\tbee"]


def test_wildcard_published_port_maps_to_the_first_non_internal_address() -> None:
    nets = {"back": {"subnet": "10.2.0.0/24", "internal": True}, "front": {"subnet": "10.1.0.0/24"}}
    containers = {"web": {"networks": ["back", "front"], "ports": ["8080:80", "0.0.0.0:8443:443"]}}
    state, _ = build(make_spec(nets, containers))
    assert elements(state, "ports_addr") == [
        [{"concat": ["tcp", 8080]}, "10.1.0.2"],
        [{"concat": ["tcp", 8443]}, "10.1.0.2"],
    ]
    assert elements(state, "ports_port") == [
        [{"concat": ["tcp", 8080]}, 80],
        [{"concat": ["tcp", 8443]}, 443],
    ]
    assert elements(state, "hostports_addr") == elements(state, "hostports_port") == []


def test_published_port_on_one_host_address_uses_the_hostports_maps() -> None:
    nets = {"front": {"subnet": "10.1.0.0/24"}}
    containers = {"dns": {"networks": ["front"], "ports": ["127.0.0.1:5353:53/udp"]}}
    state, _ = build(make_spec(nets, containers))
    key = {"concat": ["127.0.0.1", "udp", 5353]}
    assert elements(state, "hostports_addr") == [[key, "10.1.0.2"]]
    assert elements(state, "hostports_port") == [[key, 53]]
    assert elements(state, "ports_addr") == elements(state, "ports_port") == []


def test_port_ranges_are_expanded_one_element_per_port() -> None:
    nets = {"front": {"subnet": "10.1.0.0/24"}}
    containers = {"rtp": {"networks": ["front"], "ports": ["7000-7002:8000-8002/udp"]}}
    state, _ = build(make_spec(nets, containers))
    assert elements(state, "ports_port") == [[{"concat": ["udp", 7000 + i]}, 8000 + i] for i in range(3)]
    assert elements(state, "ports_addr") == [[{"concat": ["udp", 7000 + i]}, "10.1.0.2"] for i in range(3)]


def test_network_sets_intra_only_for_icc_internal_and_masquerade_for_the_rest() -> None:
    nets = {
        "a": {"subnet": "10.1.0.0/24"},
        "b": {"subnet": "10.2.0.0/24", "icc": False},
        "c": {"subnet": "10.3.0.0/24", "internal": True},
    }
    state, _ = build(make_spec(nets, {}))
    assert elements(state, "bridges") == ["nr-a", "nr-b", "nr-c"]
    assert elements(state, "intra") == [{"concat": ["nr-a", "nr-a"]}, {"concat": ["nr-c", "nr-c"]}]
    assert elements(state, "internal") == ["nr-c"]
    assert elements(state, "masq_subnets") == [
        {"prefix": {"addr": "10.1.0.0", "len": 24}},
        {"prefix": {"addr": "10.2.0.0", "len": 24}},
    ]


def test_no_bridge_table_while_every_network_allows_icc() -> None:
    state, _ = build(make_spec(THREE, {"x": {"networks": ["a", "b"]}}))
    families = {r.family for r in state.resources.values() if isinstance(r, NftTable | NftElement)}
    assert families == {"inet"}
    assert get(state, "nft-table", f"inet {TABLE}") == NftTable(
        "inet", TABLE, tables("default")["inet"].fingerprint()
    )


def test_bridge_table_holds_exactly_the_ports_of_networks_without_icc() -> None:
    nets = {"a": {"subnet": "10.1.0.0/24"}, "b": {"subnet": "10.2.0.0/24", "icc": False}}
    containers = {"x": {"networks": ["a", "b"]}, "y": {"networks": ["b"]}, "z": {"networks": ["a"]}}
    state, _ = build(make_spec(nets, containers))
    fingerprint = tables("default")["bridge"].fingerprint()
    assert get(state, "nft-table", f"bridge {TABLE}") == NftTable("bridge", TABLE, fingerprint)
    expected = sorted([iface(state, "x/b").host_ifname, iface(state, "y/b").host_ifname])
    assert sorted(elements(state, "noicc_ports", family="bridge")) == expected


# Adding one container changes only what is its own (its peers learn its names from the resolver).

BASE_NETS = {
    "front": {"subnet": "10.1.0.0/24"},
    "back": {"subnet": "10.2.0.0/24", "icc": False},
    "other": {"subnet": "10.3.0.0/24"},
}
BASE_CONTAINERS: dict[str, Any] = {
    "a": {"networks": ["front"]},
    "b": {"networks": ["front", "back"]},
    "c": {"networks": ["other"], "ports": ["9000:9000"]},
    "d": {"networks": ["back"]},
}
NEW = {
    "networks": {"back": {"aliases": ["newbie"]}, "front": None},
    "ports": ["8080:80", "127.0.0.1:5000:5000"],
}


def _with_new(position: int) -> dict[str, Any]:
    items = list(BASE_CONTAINERS.items())
    items.insert(position, ("new", NEW))
    return dict(items)


def _element_key(family: str, set_name: str, value: Any) -> Key:
    return ("nft-element", f"{family} {TABLE} {set_name} {element_json(value)}")


@pytest.mark.parametrize("position", [0, 2, 4])
def test_adding_a_container_changes_only_its_own_resources(position: int) -> None:
    before, first = build(make_spec(BASE_NETS, BASE_CONTAINERS))
    after, second = build(make_spec(BASE_NETS, _with_new(position)), previous=first)
    old, new = before.resources, after.resources

    assert set(old) - set(new) == set()
    changed = {k for k in set(old) & set(new) if old[k] != new[k]}
    assert changed == set()

    on_back, on_front = second.networks["back"].addresses["new"], second.networks["front"].addresses["new"]
    wild, local = {"concat": ["tcp", 8080]}, {"concat": ["127.0.0.1", "tcp", 5000]}
    assert set(new) - set(old) == {
        ("netns", "new"),
        ("iface", "new/back"),
        ("iface", "new/front"),
        ("route", "new"),
        ("hosts", "new"),
        # The first non-internal network is back, so published ports lead to new's address there.
        _element_key("inet", "ports_addr", [wild, on_back]),
        _element_key("inet", "ports_port", [wild, 80]),
        _element_key("inet", "hostports_addr", [local, on_back]),
        _element_key("inet", "hostports_port", [local, 5000]),
        _element_key("bridge", "noicc_ports", iface(after, "new/back").host_ifname),
    }

    assert hosts_entries(after, "new") == [f"{on_back}\tnew\tnewbie", f"{on_front}\tnew"]
