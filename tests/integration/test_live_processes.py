"""Removing containers whose namespaces real processes still hold, against the real kernel.

A workload lives in its container's namespace; unmounting /run/netns/NAME does not free a namespace a
process is in, so its veth would never go by itself. Destroy, and a spec that no longer lists a
container, must still remove every object of ours at once (host veths, macvlan children, routes, nft
elements, hosts files, the mount), leave the processes running without our network, say so, and let
the container be added again in a fresh namespace. Each test starts a sleeper and a TCP server in the
namespaces, for bridge, macvlan and overlay containers and for an adopted namespace; processes are
checked by pid from this machine (their state, their namespace, the interfaces left in it).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from sandbox import Cluster, Host, make_cluster
from test_bridge import without

pytestmark = pytest.mark.integration

SPECS = Path(__file__).resolve().parents[2] / "specs"
PETS = SPECS / "pets-bridge.yaml"
START_TIMEOUT = 10.0


@dataclass(frozen=True)
class Live:
    """A process in a container's namespace, by its pid as this machine sees it."""

    pid: int
    netns_inode: int
    what: str

    def assert_alive_without_our_network(self) -> None:
        """Still running, still in the namespace it started in, which holds nothing but a bare `lo`."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        state = stat.rsplit(")", 1)[1].split()[0]
        assert state not in ("Z", "X"), f"{self.what} ({self.pid}) is gone: state {state}"
        assert os.stat(f"/proc/{self.pid}/ns/net").st_ino == self.netns_inode, f"{self.what} moved"
        links = json.loads(self._ip("-d", "link", "show"))
        assert [link["ifname"] for link in links] == ["lo"], f"{self.what}'s namespace: {links}"
        assert "ifalias" not in links[0], f"{self.what}'s namespace still carries our mark: {links[0]}"
        routes = json.loads(self._ip("-4", "route", "show", "table", "all"))
        assert all(r.get("dev") == "lo" for r in routes), f"{self.what}'s namespace: {routes}"

    def _ip(self, *args: str) -> str:
        return links_via(f"/proc/{self.pid}/ns/net", *args)


def links_via(netns_file: str, *args: str) -> str:
    """`ip -j ARGS` (default: `link show`) in the namespace a file of this machine's /proc names; it
    only reads, and the namespace is inside a sandbox."""
    argv = ["nsenter", f"--net={netns_file}", "ip", "-j", *(args or ("link", "show"))]
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30).stdout


def netns_inode(host: Host, name: str) -> int:
    """The inode of the sandbox's /run/netns/NAME (seen through its init's root)."""
    return os.stat(f"/proc/{host.pid}/root/run/netns/{name}").st_ino


def _child(parent: int, comm: str | None = None) -> int:
    """nsenter's only child (the command it runs), once it exists (and runs `comm`)."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        if len(children) == 1:
            pid = int(children[0])
            if comm is None or Path(f"/proc/{pid}/comm").read_text().strip() == comm:
                return pid
        if time.monotonic() > deadline:
            raise AssertionError(f"nsenter {parent} did not start {comm or 'its command'}: {children}")
        time.sleep(0.02)


def sleeper(host: Host, netns: str) -> Live:
    log = host.workdir / f"sleeper-{netns}-{time.monotonic_ns()}.log"
    bg = host.background(["ip", "netns", "exec", netns, "sleep", "1000"], log=log)
    pid = _child(bg.proc.pid, "sleep")
    live = Live(pid, os.stat(f"/proc/{pid}/ns/net").st_ino, f"sleeper in {netns}")
    assert live.netns_inode == netns_inode(host, netns)
    return live


def server(host: Host, netns: str, port: int, reply: str) -> Live:
    srv = host.serve(netns, port, reply)  # returns once the server listens
    pid = _child(srv.proc.pid)
    live = Live(pid, os.stat(f"/proc/{pid}/ns/net").st_ino, f"server in {netns}")
    assert live.netns_inode == netns_inode(host, netns)
    return live


def apply(host: Host, spec: Path, *args: str) -> str:
    proc = host.reconciler("apply", str(spec), *args)
    assert proc.returncode == 0, f"apply failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def destroy(host: Host, spec: Path, *args: str) -> str:
    proc = host.reconciler("destroy", str(spec), *args)
    assert proc.returncode == 0, f"destroy failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def assert_in_sync(host: Host, spec: Path, *args: str) -> None:
    proc = host.reconciler("apply", str(spec), "--exit-code", *args)
    assert proc.returncode == 0 and "No changes" in proc.stdout, f"not in sync:\n{proc.stdout}\n{proc.stderr}"


def note(container: str, processes: int) -> str:
    plural = "es" if processes > 1 else ""
    used = f"namespace still used by {processes} process{plural}"
    return f"note: container {container}: {used}; its interfaces were removed"


def reached(host: Host, netns: str | None, target: str, port: int, reply: str) -> None:
    conn = host.connect(netns, target, port, timeout=5)
    assert conn.ok and conn.data == reply + "\n", f"{netns or 'host'} -> {target}:{port}: {conn}"


def interfaces(host: Host, spec: Path | None, container: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = host.show(spec)["containers"][container]["interfaces"]
    return found


def assert_container_gone(host: Host, container: str, ifaces: list[dict[str, Any]]) -> None:
    """Nothing of ours names the container: no host veth, namespace, hosts file, route or nft element
    with its address, and no other container's hosts file lists it."""
    links = host.links()
    for iface in ifaces:
        if iface["host_ifname"]:
            assert iface["host_ifname"] not in links, f"{container}'s host veth is left: {links}"
        address = iface["address"].split("/")[0]
        assert address not in host.run("nft list ruleset").stdout, f"nft still names {address}"
        assert address not in host.run("ip route show proto 211").stdout, f"a route to {address} is left"
    assert container not in host.netns_list()
    assert host.run(["test", "-e", f"/etc/netns/{container}"], check=False).returncode == 1
    others = host.run("cat /etc/netns/*/hosts 2>/dev/null || true").stdout
    assert not [line for line in others.splitlines() if container in line.split()[1:]], others


def assert_nothing_of_ours(host: Host, spec: Path, foreign_netns: tuple[str, ...] = ()) -> None:
    assert not [name for name in host.links() if name.startswith("nr")], host.links()
    assert host.netns_list() == sorted(foreign_netns)
    assert not [t for t in host.nft_tables() if "netreconciler" in t], host.nft_tables()
    assert not host.run("ip route show proto 211").stdout.strip()
    assert host.run("ls -A /etc/netns").stdout.strip() == ""
    assert host.show(spec)["containers"] == {}


def test_bridge_destroy_leaves_live_processes_running(host: Host) -> None:
    apply(host, PETS)
    db, web = sleeper(host, "db"), server(host, "web", 5000, "web")
    reached(host, "db", "web", 5000, "web")
    reached(host, None, "127.0.0.1", 8000, "web")

    out = destroy(host, PETS)
    assert note("db", 1) in out and note("web", 1) in out, out
    assert_nothing_of_ours(host, PETS)
    db.assert_alive_without_our_network()
    web.assert_alive_without_our_network()
    again = host.reconciler("destroy", str(PETS))
    assert again.returncode == 0 and "No changes" in again.stdout, again.stdout


def test_bridge_container_removed_under_live_processes_then_added_again(host: Host) -> None:
    apply(host, PETS)
    old = [server(host, "web", 5000, "old web"), sleeper(host, "web")]
    db = server(host, "db", 6379, "db")
    reached(host, "db", "web", 5000, "old web")
    ifaces = interfaces(host, PETS, "web")

    out = apply(host, without(PETS, "web", host.workdir))
    assert note("web", 2) in out, out
    assert "note: container db" not in out
    assert_container_gone(host, "web", ifaces)
    for live in old:
        live.assert_alive_without_our_network()
    reached(host, None, interfaces(host, PETS, "db")[0]["address"].split("/")[0], 6379, "db")

    # Added again: a fresh namespace, wired and named; the old one, still held, confuses nothing.
    apply(host, PETS)
    assert netns_inode(host, "web") != old[0].netns_inode
    assert_in_sync(host, PETS)
    server(host, "web", 5000, "new web")
    reached(host, "db", "web", 5000, "new web")
    reached(host, None, "127.0.0.1", 8000, "new web")
    for live in old:
        live.assert_alive_without_our_network()

    out = destroy(host, PETS)
    assert note("web", 1) in out and note("db", 1) in out, out
    assert_nothing_of_ours(host, PETS)
    db.assert_alive_without_our_network()


def add_lan(host: Host) -> None:
    """A router namespace behind the veth lan0 (the macvlan parent); the host has its own address on it."""
    host.run(["ip", "netns", "add", "router"])
    host.run("ip link add lan0 type veth peer name eth0 netns router && ip link set lan0 up")
    host.run("ip addr add 192.168.10.254/24 dev lan0")
    host.run(
        "ip addr add 192.168.10.1/24 dev eth0 && ip link set eth0 up && ip link set lo up", netns="router"
    )


def test_macvlan_containers_removed_and_destroyed_under_live_processes(host: Host) -> None:
    add_lan(host)
    net = {"driver": "macvlan", "parent": "lan0", "subnet": "192.168.10.0/24", "gateway": "192.168.10.1"}
    data: dict[str, Any] = {
        "version": 1,
        "networks": {"lan": net | {"host_access": True}},  # host routes of ours to each container
        "containers": {"a": {"networks": ["lan"]}, "b": {"networks": ["lan"]}},
    }
    spec = host.write_spec(data)
    apply(host, spec)
    old = [server(host, "a", 7000, "old a"), sleeper(host, "a")]
    b = server(host, "b", 7000, "b")
    ifaces = interfaces(host, spec, "a")
    a_ip = ifaces[0]["address"].split("/")[0]
    reached(host, "b", "a", 7000, "old a")
    reached(host, None, a_ip, 7000, "old a")  # through the shim

    del data["containers"]["a"]
    out = apply(host, host.write_spec(data, "without-a.yaml"))
    assert note("a", 2) in out, out
    assert_container_gone(host, "a", ifaces)
    for live in old:
        live.assert_alive_without_our_network()  # its macvlan child was deleted from inside
    b_ip = interfaces(host, None, "b")[0]["address"].split("/")[0]
    reached(host, None, b_ip, 7000, "b")

    data["containers"]["a"] = {"networks": ["lan"]}
    apply(host, spec)
    assert_in_sync(host, spec)
    server(host, "a", 7000, "new a")
    reached(host, "b", "a", 7000, "new a")
    reached(host, None, interfaces(host, spec, "a")[0]["address"].split("/")[0], 7000, "new a")

    out = destroy(host, spec)
    assert note("a", 1) in out and note("b", 1) in out, out
    assert_nothing_of_ours(host, spec, foreign_netns=("router",))
    assert "UP" in host.run("ip -br link show lan0").stdout, "the parent is not ours"
    for live in [*old, b]:
        live.assert_alive_without_our_network()


def test_namespaces_held_by_a_file_or_a_mount_only(host: Host) -> None:
    """Holders with no process inside: an open descriptor (bridge: found by the bounded wait on its
    leftover veth; macvlan: found by the descriptor scan) and a second bind mount (mountinfo)."""
    add_lan(host)
    data = {
        "version": 1,
        "networks": {
            "br": {"driver": "bridge"},
            "lan": {
                "driver": "macvlan",
                "parent": "lan0",
                "subnet": "192.168.10.0/24",
                "gateway": "192.168.10.1",
            },
        },
        "containers": {"fd": {"networks": ["br"]}, "mnt": {"networks": ["br"]}, "mac": {"networks": ["lan"]}},
    }
    spec = host.write_spec(data)
    apply(host, spec)
    fd_veth = interfaces(host, spec, "fd")[0]["host_ifname"]
    holders = {}
    for name in ("fd", "mac"):
        log = host.workdir / f"holder-{name}.log"
        bg = host.background(["sh", "-c", f"exec sleep 1000 3</run/netns/{name}"], log=log)
        holders[name] = _child(bg.proc.pid, "sleep")
    host.run("touch /etc/netns/mnt-copy && mount --bind /run/netns/mnt /etc/netns/mnt-copy")

    out = destroy(host, spec)
    assert "note: container mnt: namespace still used by a mount at /etc/netns/mnt-copy;" in out, out
    assert "note: container mac: namespace still used by an open file of 1 process;" in out, out
    assert f"note: the kernel kept {fd_veth} after its namespace was deleted" in out, out
    assert "note: container fd" not in out  # nothing we can see holds it: found by the wait
    links = host.links()
    assert not [name for name in links if name.startswith("nr")], links
    assert host.netns_list() == ["router"]
    # The holders live on, and what they hold has nothing of ours left.
    for name, pid in holders.items():
        assert Path(f"/proc/{pid}/comm").read_text().strip() == "sleep", f"{name}'s holder was killed"
        held = json.loads(links_via(f"/proc/{pid}/fd/3"))
        assert [link["ifname"] for link in held] == ["lo"], f"{name}: {held}"
    mounted = json.loads(host.run(["nsenter", "--net=/etc/netns/mnt-copy", "ip", "-j", "-d", "link"]).stdout)
    assert [(link["ifname"], "ifalias" in link) for link in mounted] == [("lo", False)], mounted
    host.run("umount /etc/netns/mnt-copy && rm /etc/netns/mnt-copy")


def test_adopted_namespace_keeps_its_processes_and_loses_only_our_interfaces(host: Host) -> None:
    host.run(["ip", "netns", "add", "app"])  # someone else's namespace, with its own workload
    host.run("ip link set lo up", netns="app")
    app = server(host, "app", 9000, "app")
    data: dict[str, Any] = {
        "version": 1,
        "networks": {"net": {"driver": "bridge"}},
        "containers": {"app": {"networks": ["net"], "netns": "/run/netns/app"}, "db": {"networks": ["net"]}},
    }
    spec = host.write_spec(data)
    apply(host, spec)
    db = sleeper(host, "db")
    reached(host, "db", "app", 9000, "app")
    ifaces = interfaces(host, spec, "app")

    del data["containers"]["app"]
    out = apply(host, host.write_spec(data, "without-app.yaml"))
    assert "note:" not in out, out  # nothing unusual: an adopted namespace always outlives us
    assert host.netns_list() == ["app", "db"]
    assert netns_inode(host, "app") == app.netns_inode
    assert ifaces[0]["host_ifname"] not in host.links()
    app.assert_alive_without_our_network()

    data["containers"]["app"] = {"networks": ["net"], "netns": "/run/netns/app"}
    apply(host, spec)
    assert_in_sync(host, spec)
    reached(host, "db", "app", 9000, "app")

    out = destroy(host, spec)
    assert note("db", 1) in out and "container app" not in out.split("Applied.")[1], out
    assert_nothing_of_ours(host, spec, foreign_netns=("app",))
    app.assert_alive_without_our_network()
    db.assert_alive_without_our_network()


OVERLAY_HOSTS = ("host-a", "host-b")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with make_cluster(len(OVERLAY_HOSTS), tmp_path) as c:
        yield c


def apply_cluster(c: Cluster, spec: Path, verb: str = "apply") -> list[str]:
    locked = c.hosts[0].reconciler("lock", str(spec))
    assert locked.returncode == 0, locked.stderr
    outs = []
    for name, h in zip(OVERLAY_HOSTS, c.hosts, strict=True):
        proc = h.reconciler(verb, str(spec), *(("--host", name) if verb == "apply" else ()))
        assert proc.returncode == 0, f"{name}: {verb} failed:\n{proc.stdout}\n{proc.stderr}"
        outs.append(proc.stdout)
    return outs


def test_overlay_container_removed_and_destroyed_under_live_processes(cluster: Cluster) -> None:
    a, b = cluster.hosts
    data: dict[str, Any] = {
        "version": 1,
        "hosts": {n: {"address": addr} for n, addr in zip(OVERLAY_HOSTS, cluster.addresses, strict=True)},
        "networks": {"pets": {"driver": "overlay", "subnet": "10.200.0.0/24"}},
        "containers": {
            "web": {"host": "host-a", "networks": ["pets"]},
            "db": {"host": "host-b", "networks": ["pets"]},
        },
    }
    spec = a.write_spec(data)
    apply_cluster(cluster, spec)
    old = [server(b, "db", 6379, "old db"), sleeper(b, "db")]
    web = sleeper(a, "web")
    reached(a, "web", "db", 6379, "old db")
    ifaces = interfaces(b, spec, "db")
    db_mac = ifaces[0]["mac"]

    del data["containers"]["db"]
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    _, out_b = apply_cluster(cluster, spec)
    assert note("db", 2) in out_b, out_b
    assert_container_gone(b, "db", ifaces)
    assert db_mac not in json.dumps(a.show(spec)["networks"]["pets"].get("remote", {}))
    # Our static entries are gone (what the bridge learnt from db's traffic is the kernel's, and ages).
    fdb = [
        line for line in a.run("bridge fdb show").stdout.splitlines() if db_mac in line and " dst " in line
    ]
    assert not fdb, f"host-a still sends db's frames to host-b: {fdb}"
    assert ifaces[0]["address"].split("/")[0] + " " not in a.run("ip neigh show nud permanent").stdout
    for live in old:
        live.assert_alive_without_our_network()

    data["containers"]["db"] = {"host": "host-b", "networks": ["pets"]}
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    apply_cluster(cluster, spec)
    for name, h in zip(OVERLAY_HOSTS, cluster.hosts, strict=True):
        assert_in_sync(h, spec, "--host", name)
    server(b, "db", 6379, "new db")
    reached(a, "web", "db", 6379, "new db")

    out_a, out_b = apply_cluster(cluster, spec, "destroy")
    assert note("web", 1) in out_a and note("db", 1) in out_b, (out_a, out_b)
    for h in cluster.hosts:
        assert_nothing_of_ours(h, spec)
    for live in [*old, web]:
        live.assert_alive_without_our_network()


def test_watch_removes_a_container_under_live_processes_and_follows_later_edits(host: Host) -> None:
    from test_watch import NETWORKS, WEB, containers, db, reconciles, replace, start_watch, wait_for

    specs = host.workdir / "specs"
    specs.mkdir()
    (specs / "networks.yaml").write_text(NETWORKS)
    app = specs / "containers.yaml"
    app.write_text(containers(WEB, db()))
    daemon = start_watch(host, specs)
    wait_for("the first reconcile", lambda: bool(reconciles(daemon, "applied")), daemon)
    old = [server(host, "db", 6379, "old db"), sleeper(host, "db")]
    reached(host, "web", "db", 6379, "old db")

    replace(app, containers(WEB))
    wait_for("db to be removed", lambda: host.netns_list() == ["web"], daemon)
    wait_for(
        "the removal's note in the log",
        lambda: (
            "container db: namespace still used by 2 processes; its interfaces were removed"
            in daemon.output()
        ),
        daemon,
    )
    for live in old:
        live.assert_alive_without_our_network()

    # The daemon goes on following edits: db again, in a fresh namespace, reached by name.
    replace(app, containers(WEB, db()))
    wait_for("db to be created again", lambda: host.netns_list() == ["db", "web"], daemon)
    server(host, "db", 6379, "new db")
    wait_for("web to reach the new db", lambda: host.connect("web", "db", 6379).data == "new db\n", daemon)
    assert all(e["result"] in ("applied", "in_sync") for e in reconciles(daemon)), daemon.output()
    proc = host.reconciler("apply", str(specs), "--dry-run", "--exit-code")
    assert proc.returncode == 0 and "No changes" in proc.stdout, proc.stdout + proc.stderr
    for live in old:
        live.assert_alive_without_our_network()
