"""The macvlan driver against the real kernel, each test in its own sandboxed host (see tests/sandbox.py).

The "external network" is a router namespace joined to the sandbox's host by a veth: the host end is
the macvlan parent, the router end holds the gateway address. What the router sees (the client address
a TCP server reports, its neighbour table) shows that containers talk to it directly, without NAT.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from sandbox import Host

pytestmark = pytest.mark.integration

SPECS = Path(__file__).resolve().parents[2] / "specs"
PETS = SPECS / "pets-macvlan.yaml"
BLOCKED_TIMEOUT = 1.5
PEER = "{peer}"  # the sandbox server replies with the client address it sees


def add_lan(host: Host, parent: str, router: str, router_cidr: str) -> None:
    """A router namespace behind a veth whose host end `parent` is up and carries no address."""
    host.run(["ip", "netns", "add", router])
    host.run(["ip", "link", "add", parent, "type", "veth", "peer", "name", "eth0", "netns", router])
    host.run(["ip", "link", "set", parent, "up"])
    host.run(["ip", "addr", "add", router_cidr, "dev", "eth0"], netns=router)
    host.run(["ip", "link", "set", "eth0", "up"], netns=router)
    host.run(["ip", "link", "set", "lo", "up"], netns=router)


def spec(networks: dict[str, Any], containers: dict[str, Any]) -> dict[str, Any]:
    return {"version": 1, "networks": networks, "containers": containers}


def apply(host: Host, spec_path: Path) -> str:
    proc = host.reconciler("apply", str(spec_path))
    assert proc.returncode == 0, f"apply failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def assert_in_sync(host: Host, spec_path: Path) -> None:
    proc = host.reconciler("apply", str(spec_path), "--exit-code")
    assert proc.returncode == 0, f"second apply is not a no-op:\n{proc.stdout}\n{proc.stderr}"
    assert "No changes" in proc.stdout


def iface(shown: dict[str, Any], container: str, network: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        i for i in shown["containers"][container]["interfaces"] if i["network"] == network
    )
    return found


def ip_of(shown: dict[str, Any], container: str, network: str) -> str:
    address: str = iface(shown, container, network)["address"]
    return address.split("/")[0]


def reached(host: Host, netns: str | None, target: str, port: int, reply: str) -> None:
    conn = host.connect(netns, target, port)
    assert conn.ok and conn.data == reply + "\n", f"{netns or 'host'} -> {target}:{port}: {conn}"


def blocked(host: Host, netns: str | None, target: str, port: int) -> None:
    conn = host.connect(netns, target, port, timeout=BLOCKED_TIMEOUT)
    assert not conn.ok, f"{netns or 'host'} -> {target}:{port} should be blocked, got {conn}"


def neighbours(host: Host, netns: str) -> dict[str, str]:
    out = json.loads(host.run(["ip", "-j", "neigh", "show"], netns=netns).stdout)
    return {n["dst"]: n.get("lladdr", "") for n in out}


def host_snapshot(host: Host) -> dict[str, str]:
    """Everything an apply could change on the sandbox's host, as text."""
    return {
        "links": host.run("ip -d link show").stdout,
        "addresses": host.run("ip -4 addr show").stdout,  # IPv6 DAD changes by itself
        "routes": host.run("ip -4 route show table all").stdout,
        "netns": " ".join(host.netns_list()),
        "nft": host.run("nft list ruleset").stdout,
        # The state lock file is the reconciler's own, created by any run.
        "files": host.run("find /etc/netns /var/lib/reconciler ! -name lock").stdout,
        "forwarding": host.run("sysctl -n net.ipv4.ip_forward").stdout,
    }


def test_pets_macvlan_reaches_router_without_nat(host: Host) -> None:
    add_lan(host, "lan0", "router", "192.168.10.1/24")
    forwarding = host.run("sysctl -n net.ipv4.ip_forward").stdout
    out = apply(host, PETS)
    assert "macvlan bridge on lan0" in out
    shown = host.show()
    web, db = ip_of(shown, "web", "lan10"), ip_of(shown, "db", "lan10")
    router = host.serve("router", 7000, PEER)
    # The router sees each container's own address as the source: no NAT on the way.
    reached(host, "web", "192.168.10.1", router.port, web)
    reached(host, "db", "192.168.10.1", router.port, db)
    # ... and the container's own MAC in its neighbour table: the frame came straight from its macvlan.
    assert neighbours(host, "router").get(web) == iface(shown, "web", "lan10")["mac"]
    assert iface(shown, "web", "lan10")["mac"] == "02:42:" + ":".join(f"{int(b):02x}" for b in web.split("."))
    assert [r["gateway"] for r in host.default_route("web")] == ["192.168.10.1"]
    # Bridge mode: containers of one network reach each other, by name through the hosts file.
    host.serve("db", 6379, "db")
    reached(host, "web", "db", 6379, "db")
    # No bridge network: no firewall table of ours and no forwarding switched on.
    assert not [t for t in host.nft_tables() if "netreconciler" in t]
    assert host.run("sysctl -n net.ipv4.ip_forward").stdout == forwarding
    assert_in_sync(host, PETS)

    proc = host.reconciler("destroy", str(PETS))
    assert proc.returncode == 0, proc.stderr
    links = host.links()
    assert "lan0" in links, "the parent is not ours and must survive destroy"
    assert "UP" in host.run("ip -br link show lan0").stdout
    assert not [name for name in links if name.startswith("nr")]
    assert host.netns_list() == ["router"]
    assert not host.run("ip route show proto 211").stdout.strip()


def test_private_mode_keeps_containers_apart(host: Host) -> None:
    add_lan(host, "lan0", "router", "192.168.10.1/24")
    net = {"driver": "macvlan", "parent": "lan0", "mode": "private", "subnet": "192.168.10.0/24"}
    net["gateway"] = "192.168.10.1"
    path = host.write_spec(spec({"lan": net}, {"a": {"networks": ["lan"]}, "b": {"networks": ["lan"]}}))
    apply(host, path)
    shown = host.show()
    assert iface(shown, "a", "lan")["mode"] == "private"
    host.serve("b", 8000, "b")
    host.serve("router", 7000, PEER)
    blocked(host, "a", ip_of(shown, "b", "lan"), 8000)
    reached(host, "a", "192.168.10.1", 7000, ip_of(shown, "a", "lan"))
    assert_in_sync(host, path)


def test_same_subnet_on_two_parents_is_two_segments(host: Host) -> None:
    add_lan(host, "lan0", "router0", "192.168.30.1/24")
    add_lan(host, "lan1", "router1", "192.168.30.1/24")
    nets = {
        name: {
            "driver": "macvlan",
            "parent": parent,
            "subnet": "192.168.30.0/24",
            "ip_range": "192.168.30.64/26",
        }
        for name, parent in (("seg0", "lan0"), ("seg1", "lan1"))
    }
    containers = {
        "a": {"networks": ["seg0"]},
        "b": {"networks": ["seg1"]},
        "c": {"networks": {"seg1": {"ipv4_address": "192.168.30.70"}}},
    }
    path = host.write_spec(spec(nets, containers))
    apply(host, path)
    shown = host.show()
    # IPAM is per network: both networks hand out the first address of their range.
    assert ip_of(shown, "a", "seg0") == ip_of(shown, "b", "seg1") == "192.168.30.64"
    assert iface(shown, "a", "seg0")["parent"] == "lan0" and iface(shown, "b", "seg1")["parent"] == "lan1"
    host.serve("router0", 7000, "router0")
    host.serve("router1", 7000, "router1")
    host.serve("c", 8000, "c")
    # The same gateway address answers from a different router on each segment.
    reached(host, "a", "192.168.30.1", 7000, "router0")
    reached(host, "b", "192.168.30.1", 7000, "router1")
    reached(host, "b", "192.168.30.70", 8000, "c")
    blocked(host, "a", "192.168.30.70", 8000)
    # No gateway given: no default route.
    assert host.default_route("a") == [] and host.default_route("c") == []
    assert_in_sync(host, path)


def test_several_networks_on_one_parent(host: Host) -> None:
    add_lan(host, "lan0", "router", "192.168.10.1/24")
    host.run(["ip", "addr", "add", "192.168.10.254/24", "dev", "eth0"], netns="router")
    nets = {
        "upper": {
            "driver": "macvlan",
            "parent": "lan0",
            "subnet": "192.168.10.0/25",
            "gateway": "192.168.10.1",
        },
        "lower": {
            "driver": "macvlan",
            "parent": "lan0",
            "subnet": "192.168.10.128/25",
            "gateway": "192.168.10.254",
        },
    }
    path = host.write_spec(spec(nets, {"a": {"networks": ["upper"]}, "b": {"networks": ["lower"]}}))
    apply(host, path)
    shown = host.show()
    host.serve("router", 7000, PEER)
    reached(host, "a", "192.168.10.1", 7000, ip_of(shown, "a", "upper"))
    reached(host, "b", "192.168.10.254", 7000, ip_of(shown, "b", "lower"))
    assert [r["gateway"] for r in host.default_route("b")] == ["192.168.10.254"]
    assert_in_sync(host, path)


def test_no_gateway_first_address_and_single_address_network(host: Host) -> None:
    add_lan(host, "lan0", "router0", "192.168.40.1/24")
    add_lan(host, "lan1", "router1", "10.20.0.1/24")
    nets = {
        # A /32: the container is the network's only address; its gateway is reached on-link.
        "single": {
            "driver": "macvlan",
            "parent": "lan0",
            "subnet": "192.168.40.5/32",
            "gateway": "192.168.40.1",
        },
        "nogw": {"driver": "macvlan", "parent": "lan1", "subnet": "10.20.0.0/29"},
    }
    containers = {"a": {"networks": ["single"]}, "b": {"networks": ["nogw"]}}
    path = host.write_spec(spec(nets, containers))
    apply(host, path)
    shown = host.show()
    assert iface(shown, "a", "single")["address"] == "192.168.40.5/32"
    # Without a gateway the first address is the containers' too.
    assert iface(shown, "b", "nogw")["address"] == "10.20.0.1/29"
    routes = host.default_route("a")
    assert [(r["gateway"], "onlink" in r.get("flags", [])) for r in routes] == [("192.168.40.1", True)]
    assert host.default_route("b") == []
    host.serve("router0", 7000, PEER)
    reached(host, "a", "192.168.40.1", 7000, "192.168.40.5")
    assert_in_sync(host, path)


def test_host_access_shim(host: Host) -> None:
    add_lan(host, "lan0", "router", "192.168.10.1/24")
    # The host has its own address on the parent, as on a real LAN.
    host.run(["ip", "addr", "add", "192.168.10.254/24", "dev", "lan0"])
    net: dict[str, Any] = {"driver": "macvlan", "parent": "lan0", "subnet": "192.168.10.0/24"}
    net["gateway"] = "192.168.10.1"
    data = spec({"lan": net}, {"a": {"networks": ["lan"]}})
    path = host.write_spec(data)
    apply(host, path)
    target = ip_of(host.show(), "a", "lan")
    host.serve("a", 8000, PEER)
    # The well-known limitation: the parent never receives what its macvlan children send.
    blocked(host, None, target, 8000)

    net["host_access"] = True
    apply(host, host.write_spec(data))
    shims = [name for name in host.links() if name.startswith("nrm")]
    assert len(shims) == 1
    shim_ip = json.loads(host.run(["ip", "-j", "-4", "addr", "show", "dev", shims[0]]).stdout)[0][
        "addr_info"
    ][0]
    assert shim_ip["prefixlen"] == 32
    shown = host.show()["networks"]["lan"]
    assert shown == {
        "driver": "macvlan",
        "host_shim": shims[0],
        "parent": "lan0",
        "mode": "bridge",
        "subnet": "192.168.10.0/24",
        "address": f"{shim_ip['local']}/32",
    }
    assert f"host shim {shims[0]}" in host.reconciler("show", check=True).stdout
    # The container sees the shim's own address: the host reaches it through the shim, not via NAT.
    reached(host, None, target, 8000, shim_ip["local"])
    assert f"{target} dev {shims[0]} proto 211" in host.run("ip route show").stdout
    assert_in_sync(host, path)

    # A container joining changes the shim's routes in place.
    data["containers"]["b"] = {"networks": ["lan"]}
    out = apply(host, host.write_spec(data))
    assert "~ shim lan: routes:" in out and "shim lan" not in out.replace("~ shim lan", "")
    other = ip_of(host.show(), "b", "lan")
    host.serve("b", 8000, "b")
    reached(host, None, other, 8000, "b")
    reached(host, None, target, 8000, shim_ip["local"])
    assert_in_sync(host, path)

    net["host_access"] = False
    apply(host, host.write_spec(data))
    assert not [name for name in host.links() if name.startswith("nrm")]
    assert not host.run("ip route show proto 211").stdout.strip()
    assert "192.168.10.254/24" in host.run("ip -br addr show lan0").stdout, "the parent keeps its address"


def test_container_on_bridge_and_macvlan_publishes_on_the_bridge(host: Host) -> None:
    add_lan(host, "lan0", "router", "192.168.10.1/24")
    nets = {
        "lan": {
            "driver": "macvlan",
            "parent": "lan0",
            "subnet": "192.168.10.0/24",
            "gateway": "192.168.10.1",
        },
        "front": {"subnet": "172.30.0.0/24"},
    }
    path = host.write_spec(spec(nets, {"web": {"networks": ["lan", "front"], "ports": ["8080:80"]}}))
    apply(host, path)
    shown = host.show()
    host.serve("web", 80, "web")
    reached(host, None, "127.0.0.1", 8080, "web")
    # The first network with a gateway (the macvlan one) gives the default route; no NAT towards it.
    assert [r["dev"] for r in host.default_route("web")] == ["eth0"]
    assert "172.30.0.0/24" in shown["nftables"]["inet netreconciler masq_subnets"]
    assert "192.168.10.0/24" not in shown["nftables"]["inet netreconciler masq_subnets"]
    host.serve("router", 7000, PEER)
    reached(host, "web", "192.168.10.1", 7000, ip_of(shown, "web", "lan"))
    assert_in_sync(host, path)


def test_ipam_none_leaves_addresses_to_others(host: Host) -> None:
    add_lan(host, "lan0", "router", "192.168.10.1/24")
    net = {"driver": "macvlan", "parent": "lan0", "ipam": "none"}
    path = host.write_spec(spec({"l2": net}, {"a": {"networks": ["l2"]}}))
    apply(host, path)
    shown = host.show()
    assert iface(shown, "a", "l2")["address"] == ""
    assert host.default_route("a") == []
    mac = iface(shown, "a", "l2")["mac"]
    # Someone else configures the address; the next apply leaves it alone.
    host.run(["ip", "addr", "add", "192.168.10.9/24", "dev", "eth0"], netns="a")
    assert_in_sync(host, path)
    host.serve("router", 7000, PEER)
    reached(host, "a", "192.168.10.1", 7000, "192.168.10.9")
    # The MAC is derived from the names, so a re-created interface keeps it.
    assert host.reconciler("destroy", str(path)).returncode == 0
    apply(host, path)
    assert iface(host.show(), "a", "l2")["mac"] == mac


@pytest.mark.parametrize(
    ("parent", "expected"),
    [
        (
            "lan0.10",
            ["parent lan0.10 is an 802.1Q VLAN sub-interface", "lacks 802.1Q VLAN support (module 8021q)"],
        ),
        ("eth9", ["parent interface eth9 does not exist on this host"]),
        ("eth9.10", ["parent eth9.10 would be VLAN 10 on eth9, which does not exist on this host"]),
    ],
)
def test_unusable_parent_is_refused_before_any_change(host: Host, parent: str, expected: list[str]) -> None:
    add_lan(host, "lan0", "router", "192.168.10.1/24")
    nets = {
        "lan10": {
            "driver": "macvlan",
            "parent": parent,
            "subnet": "192.168.10.0/24",
            "gateway": "192.168.10.1",
        },
        "front": {"subnet": "172.30.0.0/24"},
    }
    path = host.write_spec(spec(nets, {"a": {"networks": ["lan10", "front"]}}))
    before = host_snapshot(host)
    for args in (["--dry-run"], []):
        proc = host.reconciler("apply", str(path), *args)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "refusing to apply, nothing was changed" in proc.stderr
        assert "network lan10: parent" in proc.stderr
        for text in expected:
            assert text in proc.stderr
        assert "Traceback" not in proc.stderr
    assert host_snapshot(host) == before


def test_pets_macvlan_spec_validates(host: Host) -> None:
    proc = host.reconciler("validate", str(PETS))
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(PETS.read_text())["networks"]["lan10"]["driver"] == "macvlan"
