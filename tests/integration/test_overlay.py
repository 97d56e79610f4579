"""The overlay driver across simulated hosts: each host a sandbox, cabled to an underlay switch (a
fourth sandbox), each running the reconciler on the same spec with `--host`.

Checked as a user would see it: names resolving and TCP connecting across hosts, what crosses the
underlay (UDP 4789 with the VNI, counted by an nft rule on the switch), isolation between overlays,
a service VIP spreading connections over backends on two hosts, the routing mesh, MTU, and that a
new container on one host only adds entries on the others.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sandbox import Cluster, Host, make_cluster

pytestmark = pytest.mark.integration

HOSTS = ("host-a", "host-b", "host-c")
PETS_VNI = 4097
UNDERLAY_MTU = 1400
BLOCKED_TIMEOUT = 1.5


def cluster_spec(addresses: list[str]) -> dict[str, Any]:
    return {
        "version": 1,
        "hosts": {name: {"address": addr} for name, addr in zip(HOSTS, addresses, strict=True)},
        "networks": {
            "pets": {"driver": "overlay", "subnet": "10.200.0.0/24", "vni": PETS_VNI},
            "other": {"driver": "overlay", "subnet": "10.201.0.0/24"},
        },
        "containers": {
            "web": {"host": "host-a", "networks": {"pets": {"aliases": ["www"]}}},
            "db": {"host": "host-b", "networks": ["pets"]},
            "api-1": {"host": "host-a", "networks": ["pets"]},
            "api-2": {"host": "host-b", "networks": ["pets"]},
            "client": {"host": "host-c", "networks": ["pets"]},
            "intruder": {"host": "host-a", "networks": ["other"]},
            "intruder-c": {"host": "host-c", "networks": ["other"]},
        },
        "services": {"api": {"network": "pets", "backends": ["api-1", "api-2"], "ports": ["8000:5000"]}},
    }


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with make_cluster(len(HOSTS), tmp_path, mtu=UNDERLAY_MTU) as c:
        yield c


def apply_all(c: Cluster, spec: Path) -> None:
    """Apply on every host; host-c finds itself by its underlay address, the others are told."""
    for name, host in zip(HOSTS, c.hosts, strict=True):
        which = () if name == "host-c" else ("--host", name)
        proc = host.reconciler("apply", str(spec), *which)
        assert proc.returncode == 0, f"{name}: apply failed:\n{proc.stdout}\n{proc.stderr}"
        assert "not pinned" not in proc.stderr, proc.stderr


def plan(host: Host, spec: Path, name: str) -> list[dict[str, Any]]:
    proc = host.reconciler("apply", str(spec), "--host", name, "--dry-run", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    actions: list[dict[str, Any]] = json.loads(proc.stdout)["actions"]
    return actions


def address_of(host: Host, netns: str) -> str:
    out = json.loads(host.run(["ip", "-j", "-4", "addr", "show", "dev", "eth0"], netns=netns).stdout)
    addr: str = out[0]["addr_info"][0]["local"]
    return addr


def count_vxlan(underlay: Host) -> None:
    """Count, on the underlay switch, UDP 4789 datagrams whose VXLAN header carries PETS_VNI."""
    underlay.run(
        "nft add table bridge wire"
        " && nft add chain bridge wire tap '{ type filter hook forward priority 0; }'"
        f" && nft add rule bridge wire tap udp dport 4789 @th,96,24 {PETS_VNI} counter"
        " && nft add rule bridge wire tap udp dport 4789 counter"
    )


def vxlan_counters(underlay: Host) -> list[int]:
    out = json.loads(underlay.run("nft -j list chain bridge wire tap").stdout)["nftables"]
    return [e["counter"]["packets"] for o in out if "rule" in o for e in o["rule"]["expr"] if "counter" in e]


def test_three_hosts_one_overlay(cluster: Cluster) -> None:
    a, b, c = cluster.hosts
    spec = a.write_spec(cluster_spec(cluster.addresses))
    lock = a.reconciler("lock", str(spec))
    assert lock.returncode == 0, lock.stderr
    apply_all(cluster, spec)

    # Every host computed the same addresses: the lock's.
    locked = json.loads(Path(f"{spec}.lock").read_text())["networks"]["pets"]["containers"]
    assert address_of(a, "web") == locked["web"]
    assert address_of(b, "db") == locked["db"]

    # web on host-a reaches db on host-b by name, over VXLAN with the network's VNI on the underlay.
    count_vxlan(cluster.underlay)
    b.serve("db", 6379, "db-on-b")
    # One full-sized segment (MSS 1350 - 40): it only crosses if the encapsulated frame fits the underlay.
    # (More than the server's single read would make it close with unread data: a reset, not a reply.)
    conn = a.connect("web", "db", 6379, payload="x" * 1310)
    assert conn.ok and conn.data == "db-on-b\n", conn
    per_vni, all_vxlan = vxlan_counters(cluster.underlay)
    assert per_vni > 0 and per_vni == all_vxlan, (per_vni, all_vxlan)
    # And back, by alias, from another host.
    a.serve("web", 80, "web-on-a")
    conn = c.connect("client", "www", 80)
    assert conn.ok and conn.data == "web-on-a\n", conn
    # The names are the embedded resolver's (each host's hosts files hold their own names only): the
    # cluster's containers and the service's VIP on pets, nothing of pets on the other overlay.
    getent = ["getent", "hosts"]
    assert c.run([*getent, "db"], netns="client").stdout.split() == [locked["db"], "db"]
    vip = json.loads(Path(f"{spec}.lock").read_text())["networks"]["pets"]["services"]["api"]
    assert b.run([*getent, "api"], netns="db").stdout.split() == [vip, "api"]
    assert c.run([*getent, "db"], netns="intruder-c", check=False).returncode == 2  # NXDOMAIN

    # Container MTU fits the underlay: 1400 - 50 bytes of VXLAN encapsulation.
    mtu = json.loads(a.run(["ip", "-j", "link", "show", "eth0"], netns="web").stdout)[0]["mtu"]
    assert mtu == UNDERLAY_MTU - 50

    # Another overlay cannot reach pets, on the same host or across hosts, at L3 ...
    db_ip = locked["db"]
    web_ip = locked["web"]
    for host, ns, target in ((a, "intruder", db_ip), (c, "intruder-c", db_ip), (c, "intruder-c", web_ip)):
        conn = host.connect(ns, target, 6379 if target == db_ip else 80, timeout=BLOCKED_TIMEOUT)
        assert not conn.ok, f"{ns} reached {target}: {conn}"
    # ... and at L2: an on-link route and a static neighbour entry still get nothing across.
    db_mac = json.loads(b.run(["ip", "-j", "link", "show", "eth0"], netns="db").stdout)[0]["address"]
    a.run(f"ip route add {db_ip}/32 dev eth0 && ip neigh add {db_ip} lladdr {db_mac} dev eth0 nud permanent",
          netns="intruder")  # fmt: skip
    conn = a.connect("intruder", db_ip, 6379, timeout=BLOCKED_TIMEOUT)
    assert not conn.ok, f"intruder reached db at L2: {conn}"

    # The service VIP spreads connections over backends on two hosts.
    a.serve("api-1", 5000, "api-1")
    b.serve("api-2", 5000, "api-2")
    replies = [c.connect("client", "api", 5000) for _ in range(20)]
    assert all(r.ok for r in replies), [r for r in replies if not r.ok]
    seen = {r.data.strip() for r in replies}
    assert seen == {"api-1", "api-2"}, [r.data for r in replies]
    # The VIP serves its own network only.
    conn = a.connect("intruder", vip, 5000, timeout=BLOCKED_TIMEOUT)
    assert not conn.ok, f"intruder reached the VIP: {conn}"
    # Only the service's ports answer on the VIP, not whatever else listens on its host.
    c.serve(None, 7000, "host-c-itself")
    conn = c.connect("client", "api", 7000, timeout=BLOCKED_TIMEOUT)
    assert not conn.ok, conn
    # The published port answers on every host (routing mesh), from a machine on the underlay.
    for addr in cluster.addresses:
        conn = cluster.underlay.connect(None, addr, 8000)
        assert conn.ok and conn.data.strip() in ("api-1", "api-2"), f"{addr}:8000 -> {conn}"
    # ... and to the host's own processes, on 127.0.0.1 too.
    conn = c.connect(None, "127.0.0.1", 8000)
    assert conn.ok and conn.data.strip() in ("api-1", "api-2"), f"host-c 127.0.0.1:8000 -> {conn}"

    # A second apply changes nothing on any host.
    for name, host in zip(HOSTS, cluster.hosts, strict=True):
        assert plan(host, spec, name) == [], name


def test_new_container_only_adds_entries_elsewhere(cluster: Cluster) -> None:
    a, b, _ = cluster.hosts
    data = cluster_spec(cluster.addresses)
    spec = a.write_spec(data)
    missing = a.reconciler("lock", str(spec), "--check")
    assert missing.returncode == 1 and "the lock file is missing" in missing.stderr, missing.stderr
    assert a.reconciler("lock", str(spec)).returncode == 0
    apply_all(cluster, spec)
    shown = a.show(spec)["networks"]["pets"]
    assert shown["vni"] == PETS_VNI and shown["vtep"] == cluster.addresses[0]
    assert {e["vtep"] for e in shown["remote"].values()} == set(cluster.addresses[1:])
    before = {i: h.links() for i, h in enumerate(cluster.hosts)}
    locked_before = json.loads(Path(f"{spec}.lock").read_text())

    data["containers"]["cache"] = {"host": "host-b", "networks": ["pets"]}
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    stale = a.reconciler("lock", str(spec), "--check")
    assert stale.returncode == 1 and "cache" in stale.stderr and "stale" in stale.stderr, stale.stderr
    assert a.reconciler("lock", str(spec)).returncode == 0
    assert a.reconciler("lock", str(spec), "--check").returncode == 0
    locked_after = json.loads(Path(f"{spec}.lock").read_text())
    for n, alloc in locked_before["networks"].items():
        for group, addrs in alloc.items():
            if isinstance(addrs, dict):
                assert addrs.items() <= locked_after["networks"][n][group].items(), (n, group)

    actions = plan(a, spec, "host-a")
    kinds = {(x["op"], x["kind"]) for x in actions}
    # On host-a: the new container's FDB and neighbour entries, and hosts files naming it; no device changes.
    assert kinds <= {("create", "fdb"), ("create", "neigh"), ("change", "hosts")}, actions
    assert ("create", "fdb") in kinds and ("create", "neigh") in kinds
    apply_all(cluster, spec)
    for i, h in enumerate(cluster.hosts):
        after = h.links()
        assert {k: v for k, v in after.items() if k in before[i]} == before[i], f"host {i}: ifindexes moved"
    b.serve("cache", 11211, "cache-on-b")
    conn = a.connect("web", "cache", 11211)
    assert conn.ok and conn.data == "cache-on-b\n", conn
    for name, host in zip(HOSTS, cluster.hosts, strict=True):
        assert plan(host, spec, name) == [], name


def test_overlay_without_hosts_is_local_and_warns_without_lock(host: Host) -> None:
    spec = host.write_spec(
        {
            "version": 1,
            "networks": {"pets": {"driver": "overlay", "subnet": "10.210.0.0/24"}},
            "containers": {"db": {"networks": ["pets"]}, "web": {"networks": ["pets"]}},
        }
    )
    proc = host.reconciler("apply", str(spec))
    assert proc.returncode == 0, proc.stderr
    assert "spec.yaml.lock not found" in proc.stderr and "not pinned" in proc.stderr, proc.stderr
    host.serve("db", 6379, "db")
    conn = host.connect("web", "db", 6379)
    assert conn.ok and conn.data == "db\n", conn
    again = host.reconciler("apply", str(spec))
    assert again.returncode == 0 and "No changes" in again.stdout, again.stdout
    gone = host.reconciler("destroy", str(spec))
    assert gone.returncode == 0, gone.stderr
    assert not [name for name in host.links() if name.startswith("nr")], host.links()
