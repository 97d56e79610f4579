"""What the observation reads of the host and the containers' namespaces (reconciler/observe), checked
against iproute2's own view of the same kernel: a bridge, a macvlan network and an adopted namespace
with a process in it, in sync and after drift (a deleted veth, a changed address, a removed default
route, a bridge's MTU); and the netlink parser under it (reconciler/rtnl.py) on a fresh capture of
links of every kind it reads (tests/rtnl_capture.py).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from rtnl_capture import check_capture
from sandbox import Host

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SPEC = {
    "version": 1,
    "name": "obs",
    "networks": {
        "front": {"driver": "bridge", "subnet": ["10.61.0.0/24", "fd00:61::/64"]},
        "lan": {
            "driver": "macvlan",
            "parent": "lan0",
            "subnet": "192.168.61.0/24",
            "gateway": "192.168.61.1",
        },
    },
    "containers": {
        "web": {"networks": ["front"], "ports": ["8080:80"]},
        "db": {"networks": ["front", "lan"]},
        "ext": {"networks": ["lan", "front"], "netns": "/run/netns/outside"},
    },
}
# The observed interfaces and default routes, printed by the reconciler's own observation.
OBSERVE = """
import json
from reconciler.model import Bridge, Iface, Route
from reconciler.nft import Nft
from reconciler.observe import observe
obs = observe("obs", {"/run/netns/outside": "ext"}, Nft())
found = obs.state.resources.values()
ifaces = [r for r in found if isinstance(r, Iface) and r.netns]
print(json.dumps({
    "ifaces": sorted([r.netns, r.ifname, r.address or "", r.mac, r.mtu, r.up] for r in ifaces),
    "ends": sorted([r.netns, r.ifname, r.host_ifname, r.bridge, r.parent, r.mode] for r in ifaces),
    "bridges": sorted([r.ifname, r.address, r.mtu, r.up, r.mac] for r in found if isinstance(r, Bridge)),
    "routes": sorted([r.netns, r.gateway, r.dev] for r in found if isinstance(r, Route)),
}))
"""


def observed(host: Host) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    found: dict[str, Any] = json.loads(host.run([sys.executable, "-c", OBSERVE], env=env).stdout)
    return found


def ip(host: Host, netns: str, *args: str) -> Any:
    return json.loads(host.run(["nsenter", f"--net={netns}", "ip", "-j", *args]).stdout or "[]")


def cidrs(link: dict[str, Any]) -> str:
    """A link's addresses but the link-local ones, IPv4 first, as the observation joins them."""
    found = [a for a in link["addr_info"] if not a["local"].startswith("fe80:")]
    v4 = sorted(f"{a['local']}/{a['prefixlen']}" for a in found if a["family"] == "inet")
    v6 = sorted(f"{a['local']}/{a['prefixlen']}" for a in found if a["family"] == "inet6")
    return ",".join(v4 + v6)


def kernel(host: Host, paths: list[str]) -> dict[str, Any]:
    """The same, as iproute2 lists it: every eth* link of the namespaces, its addresses but the
    link-local ones, its host end (the veth marked with its key) and that end's bridge, or its
    macvlan parent and mode; our bridges; the default routes of both families."""
    host_links = ip(host, "/proc/1/ns/net", "-d", "addr", "show")
    by_alias = {link.get("ifalias"): link for link in host_links}
    by_index = {link["ifindex"]: link["ifname"] for link in host_links}
    ifaces, ends, routes = [], [], []
    for path in paths:
        for link in ip(host, path, "-d", "addr", "show"):
            if not link["ifname"].startswith("eth"):
                continue
            up = "UP" in link["flags"]
            ifaces.append([path, link["ifname"], cidrs(link), link["address"], link["mtu"], up])
            key = link["ifalias"].split(":", 3)[3]
            info = link["linkinfo"]
            if info["info_kind"] == "macvlan":
                parent = by_index[link["link_index"]]
                ends.append([path, link["ifname"], "", "", parent, info["info_data"]["mode"]])
            else:
                end = by_alias.get(f"netreconciler:obs:veth:{key}")
                ends.append(
                    [
                        path,
                        link["ifname"],
                        end["ifname"] if end else "",
                        end.get("master", "") if end else "",
                        None,  # a veth has no parent, nor a mode
                        None,
                    ]
                )
        for family in ("-4", "-6"):
            for route in ip(host, path, family, "route", "show", "default"):
                routes.append([path, route["gateway"], route["dev"]])
    bridges = [
        [link["ifname"], cidrs(link), link["mtu"], "UP" in link["flags"], link["address"]]
        for link in host_links
        if link.get("ifalias", "").startswith("netreconciler:obs:network:")
    ]
    return {
        "ifaces": sorted(ifaces),
        "ends": sorted(ends),
        "bridges": sorted(bridges),
        "routes": sorted(routes),
    }


def test_the_observation_reads_the_namespaces_as_iproute2_does(host: Host) -> None:
    host.run(["ip", "netns", "add", "router"])
    host.run(["ip", "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", "router"])
    host.run(["ip", "link", "set", "lan0", "up"])
    host.run(["ip", "netns", "add", "outside"])
    sleeper = host.background(
        ["ip", "netns", "exec", "outside", "sleep", "600"], log=host.workdir / "sleep.log"
    )
    spec = host.write_spec(SPEC)
    proc = host.reconciler("apply", str(spec))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    paths = ["/run/netns/db", "/run/netns/outside", "/run/netns/web"]

    def check() -> dict[str, Any]:
        found = observed(host)
        assert found == kernel(host, paths)
        return found

    in_sync = check()
    # web one interface, db and ext two; a default route per family in each; the bridge of front.
    assert len(in_sync["ifaces"]) == 5 and len(in_sync["routes"]) == 6, in_sync
    assert len(in_sync["bridges"]) == 1 and in_sync["bridges"][0][1] == "10.61.0.1/24,fd00:61::1/64"
    assert [end[5] for end in in_sync["ends"] if end[5]] == ["bridge", "bridge"], in_sync

    web = next(r for r in host.show(spec)["containers"]["web"]["interfaces"])["host_ifname"]
    host.run(["ip", "link", "del", web])
    host.run(["ip", "-n", "db", "addr", "flush", "dev", "eth1"])
    host.run(["ip", "-n", "db", "addr", "add", "192.168.61.77/24", "dev", "eth1"])
    host.run(["nsenter", "--net=/run/netns/outside", "ip", "route", "del", "default"])
    bridge = in_sync["bridges"][0][0]
    host.run(["ip", "link", "set", bridge, "mtu", "1400"])
    drifted = check()
    assert drifted["bridges"][0][2] == 1400
    assert drifted != in_sync
    assert ["/run/netns/db", "eth1"] in [i[:2] for i in drifted["ifaces"]]
    assert any(i[2] == "192.168.61.77/24" for i in drifted["ifaces"]), drifted
    assert not any(r[0] == "/run/netns/outside" and "." in r[1] for r in drifted["routes"]), drifted
    assert all(i[0] != "/run/netns/web" for i in drifted["ifaces"]), "web's veth went with its host end"

    proc = host.reconciler("apply", str(spec))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    repaired = check()
    # A bridge without an address of its own takes its ports' lowest: the re-created veth's may be it.
    assert [b[:4] for b in repaired.pop("bridges")] == [b[:4] for b in in_sync.pop("bridges")]
    assert repaired == in_sync
    assert sleeper.proc.poll() is None, "the adopted namespace's process lives on"


def test_the_parser_reads_links_addresses_and_routes_as_iproute2_does(host: Host) -> None:
    """A fresh capture on this kernel: every link kind the observation reads, strings of every
    padding, a dump over several datagrams (tests/rtnl_capture.py builds them in the sandbox)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = host.run([sys.executable, str(REPO / "tests" / "rtnl_capture.py")], env=env)
    check_capture(json.loads(proc.stdout))
