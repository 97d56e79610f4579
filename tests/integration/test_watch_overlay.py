"""`reconciler watch` on a cluster spec: two sandboxed hosts, each running the daemon with `--host` on
the same directory of specs (its lock file beside the spec, inside the directory).

A container added on host-b only adds FDB and neighbour entries on host-a; a lock edit moves an address;
a deleted FDB or neighbour entry of ours comes back from the event alone (the resync timer is set
beyond every deadline). Every wait polls the kernel or the daemons' logs with a deadline.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sandbox import Background, Cluster, Host, make_cluster
from test_watch import NO_RESYNC, address_in, log_lines, reconciles, replace, wait_for

pytestmark = pytest.mark.integration

HOSTS = ("host-a", "host-b")
SUBNET = "10.210.0"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with make_cluster(len(HOSTS), tmp_path) as c:
        yield c


def spec_data(addresses: list[str]) -> dict[str, Any]:
    return {
        "version": 1,
        "hosts": {name: {"address": addr} for name, addr in zip(HOSTS, addresses, strict=True)},
        "networks": {"pets": {"driver": "overlay", "subnet": f"{SUBNET}.0/24"}},
        "containers": {
            "web": {"host": "host-a", "networks": ["pets"]},
            "db": {"host": "host-b", "networks": ["pets"]},
        },
    }


def write(path: Path, data: dict[str, Any]) -> None:
    replace(path, yaml.safe_dump(data, sort_keys=False))


def reaches(host: Host, src: str, dst: str, port: int, reply: str) -> bool:
    return host.connect(src, dst, port, timeout=2).data == f"{reply}\n"


def vxlan_device(host: Host) -> str:
    links = json.loads(host.run(["ip", "-j", "link", "show", "type", "vxlan"]).stdout)
    assert len(links) == 1, links
    name: str = links[0]["ifname"]
    return name


def fdb_macs(host: Host, dev: str) -> set[str]:
    entries = json.loads(host.run(["bridge", "-j", "fdb", "show", "dev", dev]).stdout)
    return {e["mac"] for e in entries if e.get("dst")}


def neighbours(host: Host, dev: str) -> dict[str, str]:
    entries = json.loads(host.run(["ip", "-j", "-4", "neigh", "show", "dev", dev]).stdout)
    return {e["dst"]: e.get("lladdr", "") for e in entries}


def applied_once(daemon: Background) -> Callable[[], bool]:
    return lambda: bool(reconciles(daemon, "applied"))


def changed_kinds(daemon: Background) -> set[str]:
    """The kinds of resource the daemon changed after its first reconcile."""
    applied = reconciles(daemon, "applied")[1:]
    return {change.split()[1] for e in applied for change in e["changes"]}


def test_daemons_follow_a_cluster_spec_and_its_lock(cluster: Cluster) -> None:
    a, b = cluster.hosts
    specs = a.workdir / "specs"
    specs.mkdir()
    spec = specs / "pets.yaml"
    data = spec_data(cluster.addresses)
    write(spec, data)

    daemons = [
        host.reconciler_background(
            "watch",
            str(specs),
            "--host",
            name,
            "--log-format",
            "json",
            "--resync-interval",
            NO_RESYNC,
            log=host.workdir / f"watch-{name}.log",
        )
        for name, host in zip(HOSTS, cluster.hosts, strict=True)
    ]
    da, db_ = daemons
    for d in daemons:
        wait_for("the first reconcile", applied_once(d), d)
    b.serve("db", 6379, "db-on-b")
    wait_for("web on host-a to reach db on host-b", lambda: reaches(a, "web", "db", 6379, "db-on-b"), da)
    links_before = a.links()

    # A container on host-b: host-a's daemon adds entries only, its devices keep their indexes.
    data["containers"]["cache"] = {"host": "host-b", "networks": ["pets"]}
    write(spec, data)
    wait_for("cache on host-b", lambda: "cache" in b.netns_list() and address_in(b, "cache") != [], db_)
    b.serve("cache", 11211, "cache-on-b")
    wait_for("web to reach cache by name", lambda: reaches(a, "web", "cache", 11211, "cache-on-b"), da)
    assert a.links() == links_before, "host-a's devices changed"
    assert changed_kinds(da) <= {"fdb", "neigh", "hosts"}, da.output()
    assert {"fdb", "neigh"} <= changed_kinds(da), da.output()

    # No lock yet: each daemon warned once, however many reconciles read the spec.
    for d in daemons:
        warnings = [e for e in log_lines(d) if "not pinned" in e.get("message", "")]
        assert len(warnings) == 1, d.output()

    # Relock, then a lock edit alone moves cache's address: the daemons re-read the lock.
    locked = a.reconciler("lock", str(spec))
    assert locked.returncode == 0, locked.stderr
    lock_file = specs / "pets.yaml.lock"
    lock = json.loads(lock_file.read_text())
    lock["networks"]["pets"]["containers"]["cache"] = f"{SUBNET}.200"
    replace(lock_file, json.dumps(lock))
    wait_for("cache's locked address", lambda: address_in(b, "cache") == [f"{SUBNET}.200"], db_)
    wait_for("host-a's neighbour entry", lambda: f"{SUBNET}.200" in neighbours(a, vxlan_device(a)), da)
    wait_for("web to reach the moved cache", lambda: reaches(a, "web", "cache", 11211, "cache-on-b"), da)
    assert a.links() == links_before, "host-a's devices changed"

    # Drift: a deleted FDB entry and a deleted neighbour entry of ours come back from their events.
    dev = vxlan_device(a)
    db_ip = address_in(b, "db")[0]
    db_mac = neighbours(a, dev)[db_ip]
    assert db_mac in fdb_macs(a, dev)
    a.run(["bridge", "fdb", "del", db_mac, "dev", dev, "dst", cluster.addresses[1], "self"])
    wait_for("the FDB entry to come back", lambda: db_mac in fdb_macs(a, dev), da)
    a.run(["ip", "neigh", "del", db_ip, "dev", dev])
    wait_for("the neighbour entry to come back", lambda: neighbours(a, dev).get(db_ip) == db_mac, da)
    drift = [e for e in reconciles(da, "applied") if "drift" in e["trigger"]]
    assert drift and {e["mode"] for e in drift} == {"partial"}, drift
    assert reaches(a, "web", "db", 6379, "db-on-b")

    for d in daemons:
        d.signal(signal.SIGTERM)
        assert d.wait(timeout=30) == 0, d.output()
