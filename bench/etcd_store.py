"""etcd mode at work (needs root; everything runs in sandboxes, tests/sandbox.py):

1. Edit-to-reachable latency across hosts: host-a and host-b run `reconciler watch` against a
   3-member etcd cluster on the sandboxed switch; each edit adds a container to host-b's spec, and
   the time is taken until host-a's `web` reaches it by name (a TCP connection refused by the new
   container's kernel: name resolved, FDB, neighbour and route all in place).
2. Toward scale, no kernel for the simulated part: 200 simulated hosts register 10,000 endpoints
   through the store (`bench/etcd_sim.py`, threads, real etcd); then one real host starts
   `reconciler watch` and the time is taken until it has programmed them all (a neighbour entry
   each), and then for one more endpoint, registered by another host, to reach its neighbour table.

    .venv/bin/python bench/etcd_store.py [EDITS] [HOSTS] [PER_HOST]
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests/integration"))
from etcd_members import start_members
from sandbox import UNDERLAY_PREFIX, Host, SandboxError, make_cluster

ROOT = Path(__file__).resolve().parent.parent
MEMBERS = [f"{UNDERLAY_PREFIX}.{i}" for i in (2, 3, 4)]
DEADLINE = 600.0


def until(what: str, check: Callable[[], bool], poll: float = 0.02) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > DEADLINE:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(poll)
    return time.monotonic()


def write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(data))
    tmp.replace(path)


def spec(containers: list[str], endpoints: list[str], subnet: str, ttl: int = 10) -> dict[str, Any]:
    return {
        "version": 1,
        "name": "pets",
        "cluster": {"store": "etcd", "endpoints": endpoints, "ttl": ttl},
        "networks": {"pets": {"driver": "overlay", "subnet": subnet}},
        "containers": {c: {"networks": ["pets"]} for c in containers},
    }


def watch(host: Host, path: Path, name: str, address: str, log: Path) -> None:
    host.reconciler_background(
        "watch", str(path), "--host", name, "--advertise", address, "--resync-interval", "3600", log=log
    )


def reached(host: Host, src: str, dst: str) -> bool:
    try:
        c = host.connect(src, dst, 9, timeout=1)
    except SandboxError:
        return False  # `src` is not there yet
    return c.ok or "refused" in c.error.lower()


def latency(edits: int) -> None:
    with tempfile.TemporaryDirectory() as work:
        cluster = make_cluster(2, Path(work))
        try:
            for address in MEMBERS:
                cluster.underlay.run(f"ip addr add {address}/24 dev ul")
            etcd = start_members(cluster.underlay, MEMBERS, Path(work))
            endpoints = etcd.endpoints
            a = cluster.hosts[0]
            paths = [Path(work) / "a.yaml", Path(work) / "b.yaml"]
            write(paths[0], spec(["web"], endpoints, "10.200.0.0/24"))
            b_containers = ["db"]
            write(paths[1], spec(b_containers, endpoints, "10.200.0.0/24"))
            names = ("host-a", "host-b")
            for host, path, name, addr in zip(cluster.hosts, paths, names, cluster.addresses, strict=True):
                watch(host, path, name, addr, Path(work) / f"{name}.log")
            until("web to reach db", lambda: reached(a, "web", "db"), 0.2)
            times = []
            hosts_file = Path(f"/proc/{a.pid}/root/etc/netns/web/hosts")
            for k in range(edits):
                b_containers.append(f"c{k}")
                start = time.monotonic()
                write(paths[1], spec(b_containers, endpoints, "10.200.0.0/24"))
                # A name not yet in the hosts file falls through to DNS, whose timeout (5 s) would be
                # measured instead: connect once the name is there.
                until(f"c{k} in web's hosts file", lambda k=k: f"\tc{k}\n" in hosts_file.read_text())
                done = until(f"web to reach c{k}", lambda k=k: reached(a, "web", f"c{k}"))
                times.append(done - start)
            times.sort()
            p90 = times[int(len(times) * 0.9) - 1] if len(times) >= 10 else times[-1]
            print(
                f"edit-to-reachable across hosts, {edits} edits: p50 {statistics.median(times):.2f} s, "
                f"p90 {p90:.2f} s, max {times[-1]:.2f} s"
            )
        finally:
            cluster.close()


def neighbours(host: Host, dev: str) -> int:
    out = host.run(["ip", "-4", "neigh", "show", "dev", dev, "nud", "permanent"]).stdout
    return out.count("\n")


def simulation(hosts: int, per_host: int) -> None:
    addresses = ["10.251.0.2", "10.251.0.3", "10.251.0.4"]
    # The members' data on tmpfs: 10,000 transactions fsync'ed three times measure a shared disk.
    shm = tempfile.TemporaryDirectory(dir="/dev/shm")
    with tempfile.TemporaryDirectory() as work, shm as data, Host(workdir=Path(work)) as host:
        host.run("ip link set lo up && ip link add ul0 type veth peer name ul1")
        host.run("ip addr add 192.0.2.11/24 dev ul0 && ip link set ul0 up && ip link set ul1 up")
        for a in addresses:
            host.run(f"ip addr add {a}/32 dev lo")
        etcd = start_members(host, addresses, Path(data))
        endpoints = ",".join(etcd.endpoints)
        sim = [sys.executable, str(ROOT / "bench/etcd_sim.py")]
        env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
        done = host.run([*sim, "register", endpoints, str(hosts), str(per_host)], env=env, timeout=DEADLINE)
        seconds = json.loads(done.stdout)["seconds"]
        total = hosts * per_host
        rate = total / seconds
        print(f"{hosts} simulated hosts registered {total} endpoints in {seconds:.1f} s ({rate:.0f}/s)")

        path = Path(work) / "real.yaml"
        data = spec(["web"], etcd.endpoints, "10.200.0.0/16", ttl=3600)
        data["name"] = "sim"
        write(path, data)
        start = time.monotonic()
        watch(host, path, "real", "192.0.2.11", Path(work) / "real.log")
        until("the VXLAN device", lambda: "nrx" in host.run("ip -o link show type vxlan").stdout, 0.2)
        dev = host.run("ip -o link show type vxlan").stdout.split(": ")[1].split("@")[0]
        want = total + hosts
        programmed = until(f"{want} neighbour entries", lambda: neighbours(host, dev) >= want, 0.5)
        print(
            f"one real host programmed {total} remote containers + {hosts} node addresses: "
            f"{programmed - start:.1f} s from the daemon's start"
        )

        added = json.loads(host.run([*sim, "add", endpoints, "late0"], env=env).stdout)
        address = added["address"]
        shown = ["ip", "neigh", "show", address, "dev", dev]
        until("the added endpoint", lambda: address in host.run(shown).stdout)
        print(
            f"one endpoint added by another host: in its neighbour table {time.time() - added['at']:.2f} s "
            "after its registration"
        )


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    latency(args[0] if args else 20)
    simulation(*(args[1:3] if len(args) >= 3 else (200, 50)))
