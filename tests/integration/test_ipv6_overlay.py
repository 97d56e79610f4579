"""IPv6 on overlay networks across two sandboxed hosts cabled to an underlay switch (tests/sandbox.py's
`make_cluster`, as test_overlay.py): addresses of both families inside the overlay, permanent
neighbour entries for the remote IPv6 addresses, service VIPs per family, names of both families, an
IPv6-only overlay, and an IPv6 underlay (VXLAN over IPv6 between the hosts).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sandbox import Background, Cluster, Host, make_cluster
from test_ipv6 import addresses
from test_watch import NO_RESYNC, reconciles, wait_for

pytestmark = pytest.mark.integration

HOSTS = ("host-a", "host-b")
UNDERLAY6 = "2001:db8:ff::"  # the switch has ::1, host i ::(11 + i)
BACKEND_TRIES = 40


def overlay_spec(hosts: dict[str, str]) -> dict[str, Any]:
    return {
        "version": 1,
        "hosts": {name: {"address": addr} for name, addr in hosts.items()},
        "networks": {
            "pets": {"driver": "overlay", "subnet": ["10.210.0.0/24", "fd00:210::/64"], "vni": 4100},
            "six": {"driver": "overlay", "subnet": "fd00:211::/64", "vni": 4101},
        },
        "containers": {
            "web": {"host": "host-a", "networks": {"pets": {"aliases": ["www"]}}},
            "db": {"host": "host-b", "networks": {"pets": {"ipv6_address": "fd00:210::db"}}},
            "api-1": {"host": "host-a", "networks": ["pets"]},
            "api-2": {"host": "host-b", "networks": ["pets"]},
            "v6a": {"host": "host-a", "networks": ["six"]},
            "v6b": {"host": "host-b", "networks": ["six"]},
        },
        "services": {"api": {"network": "pets", "backends": ["api-1", "api-2"], "ports": ["8000:5000"]}},
    }


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with make_cluster(len(HOSTS), tmp_path) as c:
        yield c


def apply_all(c: Cluster, spec: Path) -> None:
    for name, host in zip(HOSTS, c.hosts, strict=True):
        proc = host.reconciler("apply", str(spec), "--host", name)
        assert proc.returncode == 0, f"{name}: apply failed:\n{proc.stdout}\n{proc.stderr}"


def in_sync(c: Cluster, spec: Path) -> None:
    for name, host in zip(HOSTS, c.hosts, strict=True):
        proc = host.reconciler("apply", str(spec), "--host", name, "--exit-code")
        assert proc.returncode == 0 and "No changes" in proc.stdout, f"{name}:\n{proc.stdout}\n{proc.stderr}"


def reached6(host: Host, netns: str, target: str, port: int, reply: str) -> None:
    conn = host.connect(netns, target, port, family=6)
    assert conn.ok and conn.data == reply + "\n", f"{netns} -> [{target}]:{port}: {conn}"


def permanent_neighbours6(host: Host) -> set[str]:
    out = json.loads(host.run("ip -6 -j neigh show nud permanent").stdout)
    return {n["dst"] for n in out if n["dev"].startswith("nrx")}


def backends_seen(host: Host, netns: str, target: str, port: int, family: int) -> set[str]:
    """Connect until both backends answered (or BACKEND_TRIES connections): numgen spreads them."""
    seen: set[str] = set()
    for _ in range(BACKEND_TRIES):
        conn = host.connect(netns, target, port, family=family)
        assert conn.ok, f"{netns} -> {target}:{port}: {conn}"
        seen.add(conn.data.strip())
        if len(seen) == 2:
            break
    return seen


def check_overlay(c: Cluster, spec: Path) -> None:
    """What either underlay must give: traffic of both families inside the overlays, across hosts."""
    a, b = c.hosts
    # Across hosts by name over IPv6, and the server sees web's own IPv6 address: no NAT inside.
    b.serve("db", 6379, "db {peer}", dual=True)
    (web6,) = [x.split("/")[0] for x in addresses(a, "web", 6)]
    assert web6.startswith("fd00:210::"), web6
    reached6(a, "web", "db", 6379, f"db {web6}")
    # And by alias the other way, IPv4 still working beside it.
    a.serve("web", 80, "web {peer}", dual=True)
    reached6(b, "db", "www", 80, "web fd00:210::db")
    conn = b.connect("db", "www", 80, family=4)
    assert conn.ok and conn.data.startswith("web 10.210.0."), conn
    # The remote IPv6 endpoints are permanent neighbour entries on the VXLAN device.
    assert "fd00:210::db" in permanent_neighbours6(a)
    # Usable at once: nothing tentative in the containers.
    assert a.run(["ip", "-6", "addr", "show", "tentative"], netns="web").stdout == ""
    # The IPv6-only overlay: no IPv4 at all, names resolve to IPv6 across hosts.
    assert addresses(a, "v6a", 4) == [] and a.run(["ip", "-4", "route"], netns="v6a").stdout == ""
    b.serve("v6b", 7000, "v6b {peer}", dual=True)
    (v6a,) = [x.split("/")[0] for x in addresses(a, "v6a", 6)]
    reached6(a, "v6a", "v6b", 7000, f"v6b {v6a}")
    # The service's IPv6 VIP spreads connections over the backends on both hosts, as its IPv4 one does.
    a.serve("api-1", 5000, "api-1", dual=True)
    b.serve("api-2", 5000, "api-2", dual=True)
    assert backends_seen(a, "web", "api", 5000, family=6) == {"api-1", "api-2"}
    assert backends_seen(b, "db", "api", 5000, family=4) == {"api-1", "api-2"}
    in_sync(c, spec)


def test_dual_stack_and_ipv6_only_overlays_over_an_ipv4_underlay(cluster: Cluster) -> None:
    spec = cluster.hosts[0].write_spec(overlay_spec(dict(zip(HOSTS, cluster.addresses, strict=True))))
    apply_all(cluster, spec)
    check_overlay(cluster, spec)


def ipv6_underlay(c: Cluster) -> list[str]:
    """The hosts' underlay addresses replaced by IPv6 ones (without DAD): nothing of IPv4 is left
    between them, so the tunnels can only run over IPv6."""
    # The switch floods neighbour solicitations rather than learning multicast groups first.
    c.underlay.run(f"ip link set ul type bridge mcast_snooping 0 && ip addr add {UNDERLAY6}1/64 dev ul nodad")
    out = []
    for i, host in enumerate(c.hosts):
        address = f"{UNDERLAY6}{11 + i}"
        host.run(f"ip -4 addr flush dev ul0 && ip addr add {address}/64 dev ul0 nodad")
        out.append(address)
    return out


def count_vxlan6(underlay: Host) -> None:
    underlay.run(
        "nft add table bridge wire"
        " && nft add chain bridge wire tap '{ type filter hook forward priority 0; }'"
        " && nft add rule bridge wire tap ether type ip6 udp dport 4789 counter"
        " && nft add rule bridge wire tap ether type ip udp dport 4789 counter"
    )


def vxlan_counters(underlay: Host) -> list[int]:
    out = json.loads(underlay.run("nft -j list chain bridge wire tap").stdout)["nftables"]
    return [e["counter"]["packets"] for o in out if "rule" in o for e in o["rule"]["expr"] if "counter" in e]


def test_overlays_over_an_ipv6_underlay(cluster: Cluster) -> None:
    a = cluster.hosts[0]
    underlay = ipv6_underlay(cluster)
    spec = a.write_spec(overlay_spec(dict(zip(HOSTS, underlay, strict=True))))
    apply_all(cluster, spec)
    # The VXLAN devices tunnel from the hosts' IPv6 addresses, with IPv6's larger header left out of the MTU.
    details = json.loads(a.run("ip -d -j link show type vxlan").stdout)
    assert {d["linkinfo"]["info_data"].get("local6") for d in details} == {underlay[0]}
    assert {d["mtu"] for d in details} == {1500 - 70}
    fdb = a.run("bridge fdb show | grep nrx").stdout
    assert f"dst {underlay[1]}" in fdb, fdb
    count_vxlan6(cluster.underlay)
    check_overlay(cluster, spec)
    over6, over4 = vxlan_counters(cluster.underlay)
    assert over6 > 0 and over4 == 0, (over6, over4)
    # The routing mesh answers on a host's IPv6 underlay address too, from a machine on the underlay.
    seen = set()
    for _ in range(BACKEND_TRIES):
        conn = cluster.underlay.connect(None, underlay[1], 8000, family=6)
        assert conn.ok, conn
        seen.add(conn.data.strip())
        if len(seen) == 2:
            break
    assert seen == {"api-1", "api-2"}


def test_the_daemon_restores_a_deleted_ipv6_neighbour_entry_from_its_event(cluster: Cluster) -> None:
    a, b = cluster.hosts
    specs = a.workdir / "specs"
    specs.mkdir()
    spec = specs / "pets.yaml"
    data = overlay_spec(dict(zip(HOSTS, cluster.addresses, strict=True)))
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    proc = b.reconciler("apply", str(spec), "--host", "host-b")
    assert proc.returncode == 0, proc.stderr
    daemon = a.reconciler_background(
        "watch", str(specs), "--host", "host-a", "--log-format", "json", "--resync-interval", NO_RESYNC,
        log=a.workdir / "watch.log",
    )  # fmt: skip
    wait_for("the first reconcile", lambda: bool(reconciles(daemon, "applied")), daemon)
    dev = next(d for d in a.links() if d.startswith("nrx") and "fd00:210::db" in neighbours6(a, d))
    mac = neighbours6(a, dev)["fd00:210::db"]
    a.run(["ip", "-6", "neigh", "del", "fd00:210::db", "dev", dev])
    wait_for(
        "the IPv6 neighbour entry to come back",
        lambda: neighbours6(a, dev).get("fd00:210::db") == mac,
        daemon,
    )
    # Logged once the repair is verified, which may be after the entry is back.
    wait_for("the repair's log line", lambda: drift_repairs(daemon) != [], daemon)
    assert {e["mode"] for e in drift_repairs(daemon)} == {"partial"}, drift_repairs(daemon)
    b.serve("db", 6379, "db", dual=True)
    reached6(a, "web", "db", 6379, "db")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0, daemon.output()


def drift_repairs(daemon: Background) -> list[dict[str, Any]]:
    return [e for e in reconciles(daemon, "applied") if "drift" in e["trigger"]]


def neighbours6(host: Host, dev: str) -> dict[str, str]:
    entries = json.loads(host.run(["ip", "-j", "-6", "neigh", "show", "dev", dev, "nud", "permanent"]).stdout)
    return {e["dst"]: e.get("lladdr", "") for e in entries}
