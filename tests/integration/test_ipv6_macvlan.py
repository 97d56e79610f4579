"""IPv6 on macvlan networks against the real kernel, each test in its own sandboxed host.

As in test_macvlan.py the parent's LAN is a router namespace behind a veth whose host end is the
parent; here the router has an IPv6 address too (without DAD, as the containers' are). The address a
TCP server in the router reports as its client's shows that containers talk to it with their own
IPv6 address, not through the host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sandbox import Host
from test_ipv6 import addresses
from test_macvlan import PEER, add_lan, apply, assert_in_sync, spec

pytestmark = pytest.mark.integration

ROUTER6 = "2001:db8:10::1"
SUBNET6 = "2001:db8:10::/64"
BEYOND = "2001:db8:99::1"  # an address behind router1, reached through the default route


def add_lan6(host: Host, parent: str, router: str, router_cidr: str, router_cidr6: str) -> None:
    add_lan(host, parent, router, router_cidr)
    host.run(["ip", "addr", "add", router_cidr6, "dev", "eth0", "nodad"], netns=router)


def reached6(host: Host, netns: str | None, target: str, port: int, reply: str) -> None:
    conn = host.connect(netns, target, port, family=6)
    assert conn.ok and conn.data == reply + "\n", f"{netns or 'host'} -> [{target}]:{port}: {conn}"


NETWORKS: dict[str, Any] = {
    "lan": {
        "driver": "macvlan",
        "parent": "lan0",
        "subnet": ["192.168.10.0/24", SUBNET6],
        "gateway": ["192.168.10.1", ROUTER6],
        "host_access": True,
    },
    # Another parent, another LAN, the same IPv6 subnet: IPv6 only, its router known by its
    # link-local address (as router advertisements name it).
    "other": {"driver": "macvlan", "parent": "lan1", "subnet": SUBNET6, "gateway": "fe80::1"},
}
CONTAINERS: dict[str, Any] = {
    "web": {"networks": {"lan": {"ipv6_address": "2001:db8:10::80"}}},
    "db": {"networks": ["lan"]},
    "solo": {"networks": {"other": {"ipv6_address": "2001:db8:10::99"}}},
}


def lans(host: Host) -> Path:
    add_lan6(host, "lan0", "router", "192.168.10.1/24", f"{ROUTER6}/64")
    add_lan6(host, "lan1", "router1", "192.168.11.1/24", f"{ROUTER6}/64")
    host.run(["ip", "addr", "add", "fe80::1/64", "dev", "eth0", "nodad"], netns="router1")
    host.run(["ip", "addr", "add", f"{BEYOND}/128", "dev", "lo"], netns="router1")
    return host.write_spec(spec(NETWORKS, CONTAINERS))


def test_macvlan_containers_reach_the_router_with_their_own_ipv6_address(host: Host) -> None:
    path = lans(host)
    apply(host, path)
    host.serve("router", 7000, PEER, dual=True)
    reached6(host, "web", ROUTER6, 7000, "2001:db8:10::80")
    db6 = [a.split("/")[0] for a in addresses(host, "db", 6)]
    assert len(db6) == 1 and db6[0].startswith("2001:db8:10::"), db6
    reached6(host, "db", ROUTER6, 7000, db6[0])
    # The default route of each family leads to the LAN's router.
    assert "default via 2001:db8:10::1 dev eth0" in host.run(["ip", "-6", "route"], netns="web").stdout
    assert [r["gateway"] for r in host.default_route("web")] == ["192.168.10.1"]
    # Members resolve each other's IPv6 address by name, straight across the parent's LAN.
    host.serve("db", 6379, "db", dual=True)
    reached6(host, "web", "db", 6379, "db")
    # Usable at once and deaf to the LAN's router advertisements.
    for netns in ("web", "db", "solo"):
        assert host.run(["ip", "-6", "addr", "show", "tentative"], netns=netns).stdout == ""
        conf = "/proc/sys/net/ipv6/conf/eth0"
        quiet = host.run(["cat", f"{conf}/accept_ra", f"{conf}/autoconf"], netns=netns).stdout
        assert quiet.split() == ["0", "0"], netns
    assert_in_sync(host, path)


def test_ipv6_only_macvlan_on_a_second_parent_with_the_same_subnet(host: Host) -> None:
    path = lans(host)
    apply(host, path)
    assert addresses(host, "solo", 4) == []
    assert addresses(host, "solo", 6) == ["2001:db8:10::99/64"]
    assert host.run(["ip", "-4", "route"], netns="solo").stdout == ""
    # Its own LAN's router sees it; the other LAN's router (the same address) is not the one answering.
    host.serve("router1", 7000, "router1 {peer}", dual=True)
    host.serve("router", 7000, "router {peer}", dual=True)
    reached6(host, "solo", ROUTER6, 7000, "router1 2001:db8:10::99")
    reached6(host, "web", ROUTER6, 7000, "router 2001:db8:10::80")
    # Beyond its router, through the default route via the router's link-local address.
    assert "default via fe80::1 dev eth0" in host.run(["ip", "-6", "route"], netns="solo").stdout
    reached6(host, "solo", BEYOND, 7000, "router1 2001:db8:10::99")


def test_host_reaches_its_macvlan_containers_over_ipv6_through_the_shim(host: Host) -> None:
    path = lans(host)
    apply(host, path)
    shim = [line.split()[1] for line in host.run("ip -6 -o addr show scope global").stdout.splitlines()]
    assert len([s for s in shim if s.startswith("nrm")]) == 1, shim
    host.serve("web", 8080, PEER, dual=True)
    conn = host.connect(None, "2001:db8:10::80", 8080, family=6)
    # The shim's own IPv6 address is the source: the host reaches the container across the LAN.
    shim6 = host.run("ip -6 -o addr show scope global").stdout.split()
    assert conn.ok and f"{conn.data.strip()}/128" in shim6, (conn, shim6)
    # The shim takes nothing from the LAN's router advertisements.
    name = next(s for s in shim if s.startswith("nrm"))
    assert host.run(["cat", f"/proc/sys/net/ipv6/conf/{name}/accept_ra"]).stdout.strip() == "0"
    assert_in_sync(host, path)
