"""Scopes side by side on one host, against the real kernel: the host's 127.0.0.1-only services stay
out of containers' reach, and a spec that would take another scope's subnet or host port, or a foreign
bridge's prefix, is refused before anything changes while the first scope keeps working.

The sandbox's own network namespace is the "host" here: its 127.0.0.1 is what containers must not reach.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sandbox import Host

pytestmark = pytest.mark.integration

PETS = Path(__file__).resolve().parents[2] / "specs" / "pets-bridge.yaml"
PETS_SCOPE = "netreconciler_pets"
SECRET_PORT = 7777
WAIT = 10.0
BLOCKED_TIMEOUT = 1.5

# A TCP and a UDP server on 127.0.0.1 only: the host's private services (a database, a metrics port).
LOCALHOST_SERVER = r"""
import socket, sys, threading
port = int(sys.argv[1])
tcp = socket.create_server(("127.0.0.1", port))
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", port))
print("listening", flush=True)
def answer_udp():
    while True:
        data, peer = udp.recvfrom(2048)
        udp.sendto(b"secret over udp\n", peer)
threading.Thread(target=answer_udp, daemon=True).start()
while True:
    conn, _ = tcp.accept()
    with conn:
        # Read first: closing with unread data would send a reset that may overtake the answer.
        conn.settimeout(2)
        try:
            conn.recv(2048)
        except OSError:
            pass
        conn.sendall(b"secret over tcp\n")
"""

# One probe of HOST:PORT over tcp or udp; prints what came back, or the error, as JSON.
PROBE = r"""
import json, socket, sys
proto, host, port, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
try:
    if proto == "tcp":
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"hello\n")  # the sandbox's server answers once it has read
            data = s.recv(2048)
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(b"hello", (host, port))
            data = s.recv(2048)
    print(json.dumps({"ok": True, "data": data.decode()}))
except OSError as e:
    print(json.dumps({"ok": False, "data": repr(e)}))
"""


def apply(host: Host, spec: Path) -> None:
    proc = host.reconciler("apply", str(spec))
    assert proc.returncode == 0, f"apply failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"


def refused(host: Host, spec: Path, *names: str) -> str:
    """Apply SPEC expecting exit 1 and a message naming each of `names`; returns the message."""
    proc = host.reconciler("apply", str(spec))
    assert proc.returncode == 1, f"expected a refusal, got {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    assert "nothing was changed" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    for name in names:
        assert name in proc.stderr, f"{name!r} not named in:\n{proc.stderr}"
    return proc.stderr


def fingerprint(host: Host) -> dict[str, Any]:
    """What an apply could change: links, IPv4 addresses and routes, namespaces, nft, records and
    hosts files. (Link states and IPv6 addresses are the kernel's to settle after an earlier apply.)"""
    links = json.loads(host.run("ip -d -j link show").stdout)
    keys = ("ifname", "ifalias", "master", "mtu", "address", "flags")
    return {
        "links": sorted(tuple(str(link.get(k)) for k in keys) for link in links),
        "addresses": host.run("ip -4 -j addr show").stdout,
        "routes": host.run("ip -4 route show table all").stdout,
        "netns": host.netns_list(),
        "nft": host.run("nft list ruleset").stdout,
        "state": host.run(f"cat {host.state_dir}/*.json 2>/dev/null || true").stdout,
        "hosts": host.run("ls -R /etc/netns").stdout,
    }


def probe(
    host: Host, netns: str | None, proto: str, target: str, port: int, timeout: float
) -> dict[str, Any]:
    argv = [sys.executable, "-c", PROBE, proto, target, str(port), str(timeout)]
    result: dict[str, Any] = json.loads(host.run(argv, netns=netns, timeout=timeout + 30).stdout)
    return result


def serve_localhost(host: Host, tmp_path: Path) -> None:
    server = host.background([sys.executable, "-c", LOCALHOST_SERVER, str(SECRET_PORT)], tmp_path / "srv.log")
    deadline = time.monotonic() + WAIT
    while "listening" not in server.output():
        assert time.monotonic() < deadline, f"the 127.0.0.1 server did not start: {server.output()}"
        time.sleep(0.05)


def gateway(host: Host, netns: str) -> str:
    via: str = host.default_route(netns)[0]["gateway"]
    return via


def route_localhost_via_gateway(host: Host, netns: str) -> None:
    """What a container's root can do in its own namespace: give up its own 127.0.0.1 and route
    127.0.0.0/8 to its gateway, accepting loopback sources on eth0 for the replies."""
    gw = gateway(host, netns)
    host.run(
        "ip addr del 127.0.0.1/8 dev lo && ip route add 127.0.0.0/8 via "
        f"{gw} && sysctl -qw net.ipv4.conf.all.route_localnet=1 net.ipv4.conf.eth0.route_localnet=1",
        netns=netns,
    )
    assert f"via {gw}" in host.run(["ip", "route", "get", "127.0.0.1"], netns=netns).stdout


def test_a_container_cannot_reach_the_hosts_localhost_services(host: Host, tmp_path: Path) -> None:
    apply(host, PETS)
    serve_localhost(host, tmp_path)
    host.serve("web", 5000, "pets web")
    host.serve(None, 7000, "host service")
    route_localhost_via_gateway(host, "db")
    for proto in ("tcp", "udp"):
        got = probe(host, "db", proto, "127.0.0.1", SECRET_PORT, BLOCKED_TIMEOUT)
        assert not got["ok"], f"db reached the host's 127.0.0.1:{SECRET_PORT}/{proto}: {got}"
        assert probe(host, None, proto, "127.0.0.1", SECRET_PORT, WAIT)["ok"], "the host lost its own service"
    # What must keep working: the published port on the host's 127.0.0.1, and the host's services on
    # the gateway address, which containers are meant to reach.
    assert probe(host, None, "tcp", "127.0.0.1", 8000, WAIT) == {"ok": True, "data": "pets web\n"}
    assert probe(host, "db", "tcp", gateway(host, "db"), 7000, WAIT) == {"ok": True, "data": "host service\n"}

    # The probe is an attack that works: without our localnet chain, db reaches the secret.
    host.run(["nft", "delete", "chain", "inet", PETS_SCOPE, "localnet"])
    for proto in ("tcp", "udp"):
        got = probe(host, "db", proto, "127.0.0.1", SECRET_PORT, WAIT)
        assert got == {"ok": True, "data": f"secret over {proto}\n"}, got
    # The next apply sees the table's skeleton drifted and puts the chain back.
    apply(host, PETS)
    for proto in ("tcp", "udp"):
        assert not probe(host, "db", proto, "127.0.0.1", SECRET_PORT, BLOCKED_TIMEOUT)["ok"], proto
    assert probe(host, None, "tcp", "127.0.0.1", 8000, WAIT) == {"ok": True, "data": "pets web\n"}


def pets_works(host: Host) -> None:
    assert probe(host, None, "tcp", "127.0.0.1", 8000, WAIT) == {"ok": True, "data": "pets web\n"}
    conn = host.connect("db", "web", 5000, timeout=WAIT)
    assert conn.ok and conn.data == "pets web\n", conn


def one_network_spec(host: Host, name: str, network: dict[str, Any], ports: list[str] | None = None) -> Path:
    """Scope NAME: one network `n` and one container, named NAME too (namespace names are host-wide)."""
    container: dict[str, Any] = {"networks": ["n"], **({"ports": ports} if ports else {})}
    data = {"version": 1, "name": name, "networks": {"n": network}, "containers": {name: container}}
    return host.write_spec(data, f"{name}.yaml")


def test_a_subnet_inside_another_scopes_is_refused(host: Host) -> None:
    apply(host, PETS)
    host.serve("web", 5000, "pets web")
    before = fingerprint(host)
    third = one_network_spec(host, "third", {"subnet": "172.17.0.0/24"})
    refused(host, third, "network n: subnet 172.17.0.0/24", "network mybridge of scope pets", "overlaps")
    assert fingerprint(host) == before
    pets_works(host)


def test_a_host_port_another_scope_publishes_is_refused(host: Host) -> None:
    apply(host, PETS)
    host.serve("web", 5000, "pets web")
    before = fingerprint(host)
    for ports in (["8000:80"], ["127.0.0.1:8000:80"], ["7990-8010:7990-8010"]):
        other = one_network_spec(host, "other", {}, ports)
        refused(
            host,
            other,
            "container other: host port",
            "port is already allocated",
            "container web of scope pets",
        )
        assert fingerprint(host) == before
    pets_works(host)
    # Another protocol on the same port is another port.
    apply(host, one_network_spec(host, "other", {}, ["8000:80/udp"]))
    pets_works(host)


def test_a_second_scope_leaves_the_firsts_bridged_traffic_alone(host: Host) -> None:
    """With br_netfilter, frames within a bridge pass the inet forward hook of every scope's table:
    each table must drop only what enters its own bridges (it once dropped every `nr-*` bridge's)."""
    if host.run("sysctl -qw net.bridge.bridge-nf-call-iptables=1", check=False).returncode != 0:
        pytest.skip("br_netfilter is not loaded on this machine: bridged frames skip the inet hooks")
    apply(host, PETS)
    host.serve("web", 5000, "pets web")
    pets_works(host)
    apply(host, one_network_spec(host, "other", {}))
    pets_works(host)


def test_one_port_on_two_host_addresses_is_two_ports(host: Host) -> None:
    apply(host, one_network_spec(host, "one", {}, ["127.0.0.1:9000:80"]))
    apply(host, one_network_spec(host, "two", {}, ["127.0.0.2:9000:80"]))
    before = fingerprint(host)
    refused(
        host,
        one_network_spec(host, "three", {}, ["9000:80"]),
        "container three: host port 0.0.0.0:9000/tcp",
        "container one of scope one",
    )
    assert fingerprint(host) == before


def test_a_foreign_bridges_prefix_is_refused_naming_it(host: Host) -> None:
    host.run(
        "ip link add docker0 type bridge && ip addr add 172.17.0.1/16 dev docker0 && ip link set docker0 up"
    )
    before = fingerprint(host)
    refused(
        host,
        one_network_spec(host, "third", {"subnet": "172.17.0.0/24"}),
        "interface docker0",
        "172.17.0.0/16",
    )
    assert fingerprint(host) == before
    # An auto-picked subnet steps around it, as before.
    apply(host, PETS)
    web = host.show(PETS)["containers"]["web"]["interfaces"][0]["address"]
    assert not web.startswith("172.17."), web


def add_parent(host: Host, parent: str) -> None:
    host.run(f"ip link add {parent} type veth peer name {parent}p && ip link set {parent} up")


def test_macvlan_scopes_share_a_subnet_only_on_different_parents(host: Host) -> None:
    add_parent(host, "lan0")
    add_parent(host, "lan1")

    def lan(scope: str, parent: str) -> Path:
        net = {"driver": "macvlan", "parent": parent, "subnet": "192.168.30.0/24"}
        return one_network_spec(host, scope, net)

    apply(host, lan("seg0", "lan0"))
    apply(host, lan("seg1", "lan1"))  # a separate L2 segment: legal, as within one spec
    before = fingerprint(host)
    refused(host, lan("seg2", "lan0"), "network n of scope seg0")
    assert fingerprint(host) == before


def localnet_unguarded(host: Host) -> list[str]:
    """Our bridges that accept 127.0.0.0/8 from containers (route_localnet) while no localnet chain
    of ours drops it."""
    chains = host.run("nft -j list chains inet", check=False).stdout
    guarded = '"name": "localnet"' in chains and PETS_SCOPE in chains
    bridges = [
        link["ifname"]
        for link in json.loads(host.run("ip -j link show type bridge").stdout)
        if link.get("ifalias", "").startswith("netreconciler:pets:network:")
    ]
    on = [
        b
        for b in bridges
        if host.run(f"cat /proc/sys/net/ipv4/conf/{b}/route_localnet").stdout.strip() == "1"
    ]
    return [] if guarded else on


def test_no_crash_leaves_a_bridge_taking_localhost_unguarded(host: Host) -> None:
    """A kill after every kernel operation of a first apply: route_localnet is set only once the
    nft transaction that creates the localnet chain is done."""
    for after in range(1, 200):
        proc = host.reconciler("apply", str(PETS), env={"RECONCILER_FAULT_AFTER": str(after)})
        assert localnet_unguarded(host) == [], f"killed after operation {after}"
        if proc.returncode == 0:
            break
        assert proc.returncode == -9, f"operation {after}: {proc.returncode}\n{proc.stderr}"
        destroy = host.reconciler("destroy", str(PETS))
        assert destroy.returncode == 0, destroy.stderr
    else:
        pytest.fail("the apply never completed")
    assert after > 3, "the sweep never killed the apply"
