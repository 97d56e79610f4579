"""Encrypted overlays across three sandboxed hosts on a sandboxed switch, with wireguard-go (this
kernel has no WireGuard module): what crosses the switch is captured there with tcpdump.

Each host's key is made by `reconciler keygen` at the default path (a private tmpfs per host, as
/run/wireguard is for wireguard-go's UAPI sockets). A plain overlay on the same hosts is the control:
its payload is seen on the switch, so a capture that misses the encrypted one's payload proves it.
"""

from __future__ import annotations

import json
import re
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from sandbox import Background, Cluster, Host, make_cluster
from test_watch import NO_RESYNC, reconciles, wait_for

from reconciler.drivers.overlay.wireguard import TUNNEL_VXLAN_PORT
from reconciler.names import wireguard_ifname

pytestmark = pytest.mark.integration

HOSTS = ("host-a", "host-b", "host-c")
UNDERLAY_MTU = 1400
CONTAINER_MTU = UNDERLAY_MTU - 50 - 60  # VXLAN, then WireGuard over IPv4
SECURE_VNI, PLAIN_VNI = 5001, 5002
WG_PORT = 51820
DEVICE = wireguard_ifname("default")
KEY_FILE = "/etc/netreconciler/wireguard.key"
PRIVATE_DIRS = ("/run/wireguard", "/etc/netreconciler")
BLOCKED_TIMEOUT = 1.5

# Sends SIZE bytes to every client, then closes: a bulk transfer of full-size segments.
BULK_SERVER = r"""
import socket, sys
srv = socket.create_server(("0.0.0.0", int(sys.argv[1])))
print("listening", flush=True)
block = b"z" * 65536
while True:
    conn, _ = srv.accept()
    with conn:
        left = int(sys.argv[2])
        while left > 0:
            left -= conn.send(block[: min(left, len(block))])
"""
BULK_CLIENT = r"""
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20) as s:
    total = 0
    while chunk := s.recv(1 << 20):
        total += len(chunk)
print(total)
"""
# One TCP connection kept for the whole test: a line out and its echo back every 50 ms, each
# exchange logged; it stops (and says why) on the first error, or when STOP exists.
ECHO_SERVER = r"""
import socket, sys, threading
srv = socket.create_server(("0.0.0.0", int(sys.argv[1])))
print("listening", flush=True)
def echo(conn):
    with conn:
        while data := conn.recv(4096):
            conn.sendall(data)
while True:
    threading.Thread(target=echo, args=(srv.accept()[0],), daemon=True).start()
"""
ECHO_CLIENT = r"""
import os, socket, sys, time
host, port, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.create_connection((host, port), timeout=30)
s.settimeout(30)  # a re-handshake takes far less; a dropped connection errors out
n = 0
try:
    while not os.path.exists(stop):
        s.sendall(b"ping %d\n" % n)
        got = b""
        while not got.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionError("closed by the peer")
            got += chunk
        print("ok", n, flush=True)
        n += 1
        time.sleep(0.05)
    print("stopped", n, flush=True)
except OSError as e:
    print("error", repr(e), flush=True)
"""


@dataclass
class Keyed:
    cluster: Cluster
    keys: list[str]  # each host's public key, from `reconciler keygen`


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[Keyed]:
    with make_cluster(len(HOSTS), tmp_path, mtu=UNDERLAY_MTU, private_dirs=PRIVATE_DIRS) as c:
        yield Keyed(c, [keygen(h) for h in c.hosts])


def keygen(host: Host) -> str:
    proc = host.reconciler("keygen")
    assert proc.returncode == 0, proc.stderr
    mode = host.run(["stat", "-c", "%a", KEY_FILE]).stdout.strip()
    assert mode == "600", mode
    return proc.stdout.strip()


def spec_data(addresses: list[str], keys: list[str]) -> dict[str, Any]:
    return {
        "version": 1,
        "hosts": {
            name: {"address": addr, "public_key": key}
            for name, addr, key in zip(HOSTS, addresses, keys, strict=True)
        },
        "networks": {
            "secure": {"driver": "overlay", "subnet": "10.210.0.0/24", "encrypted": True, "vni": SECURE_VNI},
            "plain": {"driver": "overlay", "subnet": "10.211.0.0/24", "vni": PLAIN_VNI},
        },
        "containers": {
            "web": {"host": "host-a", "networks": ["secure"]},
            "db": {"host": "host-b", "networks": ["secure"]},
            "client": {"host": "host-c", "networks": ["secure"]},
            "pweb": {"host": "host-a", "networks": ["plain"]},
            "pdb": {"host": "host-b", "networks": ["plain"]},
        },
    }


def apply(host: Host, spec: Path, name: str, *extra: str) -> str:
    proc = host.reconciler("apply", str(spec), "--host", name, *extra)
    assert proc.returncode == 0, f"{name}: apply failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def apply_all(c: Cluster, spec: Path) -> None:
    for name, host in zip(HOSTS, c.hosts, strict=True):
        apply(host, spec, name)


def setup(k: Keyed) -> tuple[Path, dict[str, Any]]:
    data = spec_data(k.cluster.addresses, k.keys)
    spec = k.cluster.hosts[0].write_spec(data)
    assert k.cluster.hosts[0].reconciler("lock", str(spec)).returncode == 0
    apply_all(k.cluster, spec)
    return spec, data


class Capture:
    """tcpdump on the switch's bridge: every UDP datagram between the hosts, written to a pcap file."""

    def __init__(self, underlay: Host, name: str) -> None:
        self.underlay, self.pcap = underlay, underlay.workdir / f"{name}.pcap"
        # Immediate mode: what was captured is written before SIGINT ends it, not left in the ring.
        argv = ["tcpdump", "-i", "ul", "--immediate-mode", "-U", "-n", "-Z", "root", "-w", str(self.pcap)]
        argv.append("udp")
        self.proc = underlay.background(argv, log=underlay.workdir / f"{name}.tcpdump.log")
        wait_for("tcpdump to listen", lambda: "listening on" in self.proc.output())

    def stop(self) -> tuple[bytes, list[str]]:
        """(the raw capture, tcpdump's decoding of each datagram)."""
        self.proc.signal(signal.SIGINT)
        self.proc.wait(timeout=30)
        text = self.underlay.run(["tcpdump", "-r", str(self.pcap), "-n", "-v"]).stdout
        return self.pcap.read_bytes(), text.splitlines()


def udp_flows(lines: list[str]) -> set[tuple[int, int]]:
    """(source port, destination port) of the outer datagrams between the hosts."""
    flows = set()
    for line in lines:
        m = re.search(r"192\.0\.2\.\d+\.(\d+) > 192\.0\.2\.\d+\.(\d+):", line)
        if m:
            flows.add((int(m[1]), int(m[2])))
    return flows


def vnis(lines: list[str]) -> set[int]:
    return {int(m[1]) for line in lines if (m := re.search(r"VXLAN.*vni (\d+)", line))}


def wireguard_pid(host: Host) -> int:
    code = f"from reconciler.drivers.overlay.wgdevice import userspace_pid; print(userspace_pid({DEVICE!r}))"
    out = host.run([sys.executable, "-c", code], env={"PYTHONPATH": str(Path(__file__).parents[2])}).stdout
    assert out.strip().isdigit(), out
    return int(out)


def mtu(host: Host, ifname: str, netns: str | None = None) -> int:
    value: int = json.loads(host.run(["ip", "-j", "link", "show", ifname], netns=netns).stdout)[0]["mtu"]
    return value


def frag_creates(host: Host) -> int:
    for line in host.run(["cat", "/proc/net/snmp"]).stdout.splitlines():
        if line.startswith("Ip:") and "FragCreates" in line:
            header = line.split()
        elif line.startswith("Ip:"):
            return int(line.split()[header.index("FragCreates")])
    raise AssertionError("no Ip: FragCreates in /proc/net/snmp")


def test_encrypted_traffic_crosses_the_switch_only_inside_wireguard(keyed: Keyed) -> None:
    c = keyed.cluster
    a, b, h3 = c.hosts
    # From before the first apply: nothing leaves in clear while the tunnel comes up either.
    capture = Capture(c.underlay, "mixed")
    spec, _ = setup(keyed)
    b.serve("db", 6379, "db-on-b")
    b.serve("pdb", 6379, "pdb-on-b")
    a.serve("web", 80, "web-on-a")
    secret, control = "SECRET-PAYLOAD-7f3a", "PLAIN-PAYLOAD-9c1e"
    # The first connections carry the secret too: sent before any handshake is done.
    wait_for("web to reach db", lambda: a.connect("web", "db", 6379, payload=secret).data == "db-on-b\n")
    wait_for("client to reach web", lambda: h3.connect("client", "web", 80).data == "web-on-a\n")
    conn = a.connect("web", "db", 6379, payload=secret * 50)
    assert conn.ok and conn.data == "db-on-b\n", conn
    conn = h3.connect("client", "web", 80, payload=secret)
    assert conn.ok and conn.data == "web-on-a\n", conn
    conn = a.connect("pweb", "pdb", 6379, payload=control * 50)
    assert conn.ok and conn.data == "pdb-on-b\n", conn
    raw, lines = capture.stop()

    # The plain overlay's payload is on the wire, in VXLAN on 4789: the capture sees what it should.
    assert control.encode() in raw
    assert vnis(lines) == {PLAIN_VNI}, lines
    # The encrypted one's never is: WireGuard between the hosts' ports, and nothing else but the plain VNI.
    assert secret.encode() not in raw
    flows = udp_flows(lines)
    assert (WG_PORT, WG_PORT) in flows, lines
    assert {f for f in flows if WG_PORT not in f and 4789 not in f} == set(), flows
    assert not any(TUNNEL_VXLAN_PORT in f for f in flows), flows

    # MTU: the containers' fit in VXLAN inside WireGuard on the underlay; a bulk transfer of
    # full-size segments passes without any datagram being fragmented on the way.
    assert mtu(a, "eth0", "web") == CONTAINER_MTU
    assert mtu(a, DEVICE) == UNDERLAY_MTU - 60
    assert mtu(a, "eth0", "pweb") == UNDERLAY_MTU - 50
    size = 8 << 20
    server = b.background(
        ["ip", "netns", "exec", "db", sys.executable, "-c", BULK_SERVER, "7000", str(size)],
        log=b.workdir / "bulk.log",
    )
    wait_for("the bulk server", lambda: "listening" in server.output())
    before = [frag_creates(h) for h in (a, b)]
    got = a.run([sys.executable, "-c", BULK_CLIENT, "db", "7000"], netns="web", timeout=120).stdout
    assert int(got) == size
    assert [frag_creates(h) for h in (a, b)] == before

    # In sync everywhere; the private key is in no plan, no show output.
    for name, host in zip(HOSTS, c.hosts, strict=True):
        proc = host.reconciler("apply", str(spec), "--host", name, "--dry-run", "-o", "json")
        assert json.loads(proc.stdout)["actions"] == [], (name, proc.stdout)
        private = host.run(["cat", KEY_FILE]).stdout.strip()
        assert private not in proc.stdout + proc.stderr + json.dumps(host.show(spec))

    # Drift in the device itself (a peer removed, another private key) is repaired by the next apply.
    other = "wg genkey > /tmp/other.key && wg set {} private-key /tmp/other.key peer {} remove"
    a.run(other.format(DEVICE, keyed.keys[1]))
    assert not a.connect("web", "db", 6379, timeout=BLOCKED_TIMEOUT).ok
    plan = a.reconciler("apply", str(spec), "--host", "host-a", "--dry-run", "-o", "json")
    (action,) = json.loads(plan.stdout)["actions"]
    assert (action["op"], action["kind"], sorted(action["fields"])) == (
        "change",
        "wireguard",
        ["peers", "public_key"],
    )
    apply(a, spec, "host-a")
    reach_again(a)


def test_no_plaintext_when_wireguard_dies_or_a_peer_key_is_wrong(keyed: Keyed) -> None:
    c = keyed.cluster
    a, b, _ = c.hosts
    spec, data = setup(keyed)
    b.serve("db", 6379, "db-on-b")
    secret = "SECRET-PAYLOAD-4d2b"
    reach_again(a)

    # wireguard-go dies on host-a: its device goes, and with it the route into the tunnel.
    capture = Capture(c.underlay, "dead")
    a.run(["kill", "-9", str(wireguard_pid(a))])
    wait_for("the device to go", lambda: DEVICE not in a.links())
    conn = a.connect("web", "db", 6379, payload=secret, timeout=BLOCKED_TIMEOUT)
    assert not conn.ok, conn
    raw, lines = capture.stop()
    assert secret.encode() not in raw and SECURE_VNI not in vnis(lines), lines
    # The next apply repairs it: a new wireguard-go, the same keys and peers.
    plan = a.reconciler("apply", str(spec), "--host", "host-a", "--dry-run", "-o", "json")
    assert [(x["op"], x["kind"]) for x in json.loads(plan.stdout)["actions"]] == [("create", "wireguard")]
    apply(a, spec, "host-a")
    reach_again(a)

    # host-a is given a wrong key for host-b: no handshake, so nothing reaches db, and nothing in clear.
    wrong = json.loads(json.dumps(data))
    wrong["hosts"]["host-b"]["public_key"] = keygen_elsewhere(a)
    wrong_spec = a.write_spec(wrong, "wrong.yaml")
    (a.workdir / "wrong.yaml.lock").write_text((a.workdir / "spec.yaml.lock").read_text())
    apply(a, wrong_spec, "host-a")
    capture = Capture(c.underlay, "wrong")
    conn = a.connect("web", "db", 6379, payload=secret, timeout=BLOCKED_TIMEOUT)
    assert not conn.ok, conn
    raw, lines = capture.stop()
    assert secret.encode() not in raw and SECURE_VNI not in vnis(lines), lines
    assert not any(TUNNEL_VXLAN_PORT in f or 4789 in f for f in udp_flows(lines)), lines
    apply(a, spec, "host-a")
    reach_again(a)

    # No encrypted overlay left: wireguard-go is stopped, its device and the guard's element go.
    pid = wireguard_pid(a)
    data["networks"]["secure"]["encrypted"] = False
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    apply(a, spec, "host-a")
    assert DEVICE not in a.links()
    running = a.run(["test", "-d", f"/proc/{pid}"], check=False).returncode == 0
    assert not running or zombie(a, pid), f"wireguard-go {pid} still runs"
    assert str(TUNNEL_VXLAN_PORT) not in a.run("nft list ruleset").stdout


def zombie(host: Host, pid: int) -> bool:
    """A process that has exited but not been reaped (the sandbox's init reaps no one)."""
    status = host.run(["cat", f"/proc/{pid}/status"], check=False).stdout
    return "State:\tZ" in status


def reach_again(a: Host) -> None:
    """web reaches db (after a repair, or first): the first handshake initiation may be lost under
    load, and WireGuard retries it only after 5 s, longer than one connection attempt waits."""
    wait_for("web to reach db", lambda: a.connect("web", "db", 6379).data == "db-on-b\n")


def keygen_elsewhere(host: Host) -> str:
    """A valid public key no host has."""
    proc = host.reconciler("keygen", "--key-file", "/etc/netreconciler/unused.key")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_the_daemon_restarts_a_dead_wireguard_go(keyed: Keyed) -> None:
    c = keyed.cluster
    a, b, _ = c.hosts
    spec, _ = setup(keyed)
    b.serve("db", 6379, "db-on-b")
    daemon = a.reconciler_background(
        "watch",
        str(spec),
        "--host",
        "host-a",
        "--log-format",
        "json",
        "--resync-interval",
        NO_RESYNC,
        log=a.workdir / "watch-a.log",
    )
    wait_for("the daemon's first reconcile", lambda: bool(reconciles(daemon)), daemon)
    old = wireguard_pid(a)
    a.run(["kill", "-9", str(old)])
    # From the device's removal event alone (no resync within the test).
    wait_for("web to reach db again", lambda: a.connect("web", "db", 6379).data == "db-on-b\n", daemon)
    assert wireguard_pid(a) != old
    repaired = [e for e in reconciles(daemon, "applied") if any("wireguard" in x for x in e["changes"])]
    assert repaired, daemon.output()
    private = a.run(["cat", KEY_FILE]).stdout.strip()
    assert private not in daemon.output()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0, daemon.output()


def test_key_rotation_keeps_established_connections(keyed: Keyed) -> None:
    c = keyed.cluster
    a, b, _ = c.hosts
    spec, data = setup(keyed)
    echo = b.background(
        ["ip", "netns", "exec", "db", sys.executable, "-c", ECHO_SERVER, "7100"], log=b.workdir / "echo.log"
    )
    wait_for("the echo server", lambda: "listening" in echo.output())
    stop = a.workdir / "stop-echo"
    client = a.background(
        ["ip", "netns", "exec", "web", sys.executable, "-c", ECHO_CLIENT, "db", "7100", str(stop)],
        log=a.workdir / "client.log",
    )
    wait_for("the connection to carry lines", lambda: exchanged(client) >= 5)
    netns_before = [h.run("stat -L -c %i /run/netns/*").stdout for h in c.hosts]

    # host-b gets a new key, and the spec its public key; each host's next apply re-keys.
    b.run(["rm", KEY_FILE])
    data["hosts"]["host-b"]["public_key"] = keygen(b)
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    for name, host in zip(HOSTS, c.hosts, strict=True):
        plan = host.reconciler("apply", str(spec), "--host", name, "--dry-run", "-o", "json")
        actions = json.loads(plan.stdout)["actions"]
        assert [(x["op"], x["kind"]) for x in actions] == [("change", "wireguard")], (name, actions)
        assert actions[0]["fields"] == (["public_key"] if name == "host-b" else ["peers"]), actions
        apply(host, spec, name)
    count = exchanged(client)
    wait_for("lines to flow under the new key", lambda: exchanged(client) >= count + 20)
    stop.write_text("")
    wait_for("the client to stop", lambda: "stopped" in client.output() or "error" in client.output())
    assert "error" not in client.output(), client.output()
    assert [h.run("stat -L -c %i /run/netns/*").stdout for h in c.hosts] == netns_before
    handshake = a.run(["wg", "show", DEVICE, "latest-handshakes"]).stdout
    assert keyed.keys[1] not in handshake and data["hosts"]["host-b"]["public_key"] in handshake


def exchanged(client: Background) -> int:
    return sum(line.startswith("ok ") for line in client.output().splitlines())


def test_refusals_change_nothing(keyed: Keyed) -> None:
    c = keyed.cluster
    a = c.hosts[0]
    data = spec_data(c.addresses, keyed.keys)
    spec = a.write_spec(data)
    assert a.reconciler("lock", str(spec)).returncode == 0
    before = (a.links(), a.run("nft list ruleset").stdout, a.netns_list())

    def refused(*args: str, spec_path: Path = spec) -> str:
        proc = a.reconciler("apply", str(spec_path), "--host", "host-a", *args)
        assert proc.returncode == 1, proc.stdout
        assert "Traceback" not in proc.stderr, proc.stderr
        assert (a.links(), a.run("nft list ruleset").stdout, a.netns_list()) == before
        return proc.stderr

    err = refused("--key-file", "/etc/netreconciler/missing.key")
    assert "missing.key does not exist" in err and "reconciler keygen" in err, err
    a.run("echo not-a-key > /etc/netreconciler/bad.key")
    err = refused("--key-file", "/etc/netreconciler/bad.key")
    assert "holds no WireGuard private key" in err, err
    err = refused("--key-file", "/etc/netreconciler")
    assert "/etc/netreconciler cannot be read: Is a directory" in err, err
    other = keygen_elsewhere(a)
    err = refused("--key-file", "/etc/netreconciler/unused.key")
    assert "hosts.host-a.public_key" in err and other in err, err

    # Spec problems, located: no public key, a key twice, a malformed key, the IPsec key_file.
    for mutate, expected in (
        (lambda d: d["hosts"]["host-c"].pop("public_key"), "hosts.host-c.public_key: network secure"),
        (
            lambda d: d["hosts"]["host-c"].update(public_key=keyed.keys[0]),
            "hosts.host-c.public_key: is already the public key of host host-a",
        ),
        (
            lambda d: d["hosts"]["host-c"].update(public_key="abc="),
            "hosts.host-c.public_key: invalid WireGuard public key",
        ),
        (
            lambda d: d["networks"]["secure"].update(key_file="/k"),
            "networks.secure.key_file: key_file is gone",
        ),
    ):
        bad = json.loads(json.dumps(data))
        mutate(bad)
        err = refused(spec_path=a.write_spec(bad, "bad.yaml"))
        assert re.search(r"bad\.yaml:\d+: " + re.escape(expected), err), err
