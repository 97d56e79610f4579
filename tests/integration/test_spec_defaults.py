"""An omitted key is the driver's default, whatever earlier specs set: the host does not depend on history.

Each test applies a spec that sets optional keys, then the same spec without them, and checks the
kernel against what a first apply of that spec gives (`destroy`, then apply again, in the same
sandbox): the same links, MTUs, bridge addresses and routes, container addresses in the same subnet.
(A container's dynamic address itself stays while it is valid: IPAM keeps addresses stable.)
Aliases that Docker allows still resolve.
"""

from __future__ import annotations

import copy
import ipaddress
import json
from typing import Any

import pytest
from sandbox import Host
from test_macvlan import add_lan

pytestmark = pytest.mark.integration


def spec(networks: dict[str, Any], containers: dict[str, Any]) -> dict[str, Any]:
    return {"version": 1, "networks": networks, "containers": containers}


def apply(host: Host, data: dict[str, Any], name: str = "spec.yaml") -> str:
    path = host.write_spec(data, name)
    proc = host.reconciler("apply", str(path))
    assert proc.returncode == 0, f"apply failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def in_sync(host: Host, data: dict[str, Any]) -> None:
    path = host.write_spec(data, "again.yaml")
    proc = host.reconciler("apply", str(path), "--exit-code")
    assert proc.returncode == 0 and "No changes" in proc.stdout, f"{proc.stdout}\n{proc.stderr}"


def mtus(host: Host, netns: str | None = None) -> dict[str, int]:
    """Our links' MTUs (the host's `nr*` links, or every link but lo of a container)."""
    links = json.loads(host.run(["ip", "-j", "link", "show"], netns=netns).stdout)
    ours = (lambda n: n.startswith("nr")) if netns is None else (lambda n: n != "lo")
    return {link["ifname"]: link["mtu"] for link in links if ours(link["ifname"])}


def addresses(host: Host, netns: str | None = None) -> dict[str, list[str]]:
    links = json.loads(host.run(["ip", "-j", "-4", "addr", "show"], netns=netns).stdout)
    return {link["ifname"]: [f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"]] for link in links}


def kernel_view(host: Host, containers: list[str]) -> dict[str, Any]:
    """What the kernel holds of the scope: links with MTUs, addresses and default routes."""
    view: dict[str, Any] = {"host": mtus(host), "host_addresses": addresses(host)}
    for c in containers:
        subnets = [str(ipaddress.IPv4Interface(a).network) for a in addresses(host, c)["eth0"]]
        view[c] = {"mtus": mtus(host, c), "subnets": subnets, "routes": host.default_route(c)}
    return view


def like_a_first_apply(host: Host, data: dict[str, Any]) -> None:
    before = kernel_view(host, sorted(data["containers"]))
    path = host.write_spec(data, "fresh.yaml")
    assert host.reconciler("destroy", str(path)).returncode == 0
    apply(host, data, "fresh.yaml")
    assert kernel_view(host, sorted(data["containers"])) == before


def test_removing_mtu_restores_1500_and_new_containers_match(host: Host) -> None:
    containers = {c: {"networks": ["front"]} for c in "ab"}
    with_mtu = spec({"front": {"subnet": "10.30.0.0/24", "mtu": 1400}}, containers)
    apply(host, with_mtu)
    assert set(mtus(host).values()) == {1400} and len(mtus(host)) == 3  # bridge and two veths
    assert mtus(host, "a") == {"eth0": 1400}

    plain = copy.deepcopy(with_mtu)
    del plain["networks"]["front"]["mtu"]
    out = apply(host, plain)
    assert "mtu: 1400 -> 1500" in out, out
    assert set(mtus(host).values()) == {1500} and len(mtus(host)) == 3, mtus(host)
    assert mtus(host, "a") == mtus(host, "b") == {"eth0": 1500}
    in_sync(host, plain)

    plain["containers"]["c"] = {"networks": ["front"]}
    apply(host, plain)
    assert set(mtus(host).values()) == {1500} and len(mtus(host)) == 4, mtus(host)
    assert mtus(host, "c") == {"eth0": 1500}
    in_sync(host, plain)
    like_a_first_apply(host, plain)


def test_removing_gateway_internal_and_icc_restores_the_defaults(host: Host) -> None:
    net = {"subnet": "10.31.0.0/24", "gateway": "10.31.0.254", "internal": True, "icc": False}
    first = spec({"back": net}, {c: {"networks": ["back"]} for c in "ab"})
    apply(host, first)
    server = host.serve("b", 7000, "b")
    assert host.default_route("a") == []
    assert not host.connect("a", "b", 7000, timeout=1.5).ok
    bridge = next(n for n in mtus(host) if n.startswith("nr-"))
    assert addresses(host)[bridge] == ["10.31.0.254/24"]

    plain = spec({"back": {"subnet": "10.31.0.0/24"}}, first["containers"])
    apply(host, plain)
    assert addresses(host)[bridge] == ["10.31.0.1/24"]
    assert [r["gateway"] for r in host.default_route("a")] == ["10.31.0.1"]
    assert [r["gateway"] for r in host.default_route("b")] == ["10.31.0.1"]
    assert host.connect("a", "b", 7000).data == "b\n"
    server.stop()  # a process holding b's namespace would keep its veth past `destroy`
    in_sync(host, plain)
    like_a_first_apply(host, plain)


def test_removing_subnet_gives_the_first_free_pool(host: Host) -> None:
    first = spec({"front": {"subnet": "10.33.0.0/24"}}, {"a": {"networks": ["front"]}})
    apply(host, first)
    plain = spec({"front": {}}, first["containers"])
    apply(host, plain)
    bridge = next(n for n in mtus(host) if n.startswith("nr-"))
    assert addresses(host)[bridge] == ["172.17.0.1/16"]  # not 10.33.0.1/24, left from the first spec
    assert addresses(host, "a")["eth0"] == ["172.17.0.2/16"]
    in_sync(host, plain)
    like_a_first_apply(host, plain)


def test_removing_a_macvlan_mtu_restores_the_parents(host: Host) -> None:
    add_lan(host, "lan0", "router", "192.168.10.1/24")
    net = {"driver": "macvlan", "parent": "lan0", "subnet": "192.168.10.0/24", "mtu": 1400}
    with_mtu = spec({"lan": net}, {"a": {"networks": ["lan"]}})
    apply(host, with_mtu)
    assert mtus(host, "a") == {"eth0": 1400}

    plain = copy.deepcopy(with_mtu)
    del plain["networks"]["lan"]["mtu"]
    apply(host, plain)
    assert mtus(host, "a") == {"eth0": 1500}  # lan0's, as the kernel gives a new child
    in_sync(host, plain)
    like_a_first_apply(host, plain)


def test_aliases_docker_allows_resolve(host: Host) -> None:
    """An alias of one container, and one shared by two (the hosts file answers the first)."""
    containers = {
        "web1": {"networks": {"front": {"aliases": ["www", "app"]}}},
        "web2": {"networks": {"front": {"aliases": ["app"]}}},
        "client": {"networks": ["front"]},
    }
    apply(host, spec({"front": {"subnet": "10.32.0.0/24"}}, containers))
    for name in ("web1", "web2"):
        host.serve(name, 8000, name)
    assert host.connect("client", "www", 8000).data == "web1\n"
    assert host.connect("client", "app", 8000).data in ("web1\n", "web2\n")
    assert host.connect("web2", "web1", 8000).data == "web1\n"
