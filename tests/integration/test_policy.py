"""Network policy against the real kernel: allow-lists checked by real TCP connections, each denial
beside a control that succeeds (the same client to an unselected container, or an allowed client).

Bridge (one host, published ports), established connections cut when their allowance goes, and
membership changes as nft element updates only (handles and counters of every rule unchanged).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sandbox import UNDERLAY_PREFIX, Cluster, Host, make_cluster

pytestmark = pytest.mark.integration

BLOCKED_TIMEOUT = 1.5
PING = ["busybox", "ping", "-c1", "-W1"]


def spec(policies: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": 1,
        "name": "pol",
        "networks": {"net": {"subnet": "10.88.0.0/24"}},
        "containers": {
            "db": {"networks": {"net": {"ipv4_address": "10.88.0.10"}}},
            "web": {"networks": {"net": {"ipv4_address": "10.88.0.11"}}},
            "other": {"networks": {"net": {"ipv4_address": "10.88.0.12"}}},
            "front": {"networks": {"net": {"ipv4_address": "10.88.0.13"}}, "ports": ["8080:80"]},
        },
        "policies": policies,
    }


DB_FROM_WEB = {"db-from-web": {"to": ["db"], "from": ["web"], "ports": ["6379/tcp"]}}


def apply(host: Host, data: dict[str, Any], name: str = "spec.yaml") -> Path:
    path = host.write_spec(data, name)
    proc = host.reconciler("apply", str(path))
    assert proc.returncode == 0, f"apply failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return path


def reached(host: Host, netns: str | None, target: str, port: int, reply: str) -> None:
    conn = host.connect(netns, target, port)
    assert conn.ok and conn.data == reply + "\n", f"{netns or 'host'} -> {target}:{port}: {conn}"


def blocked(host: Host, netns: str | None, target: str, port: int) -> None:
    conn = host.connect(netns, target, port, timeout=BLOCKED_TIMEOUT)
    assert not conn.ok, f"{netns or 'host'} -> {target}:{port} should be blocked, got {conn}"


def test_allow_list_on_one_bridge(host: Host) -> None:
    apply(host, spec(DB_FROM_WEB))
    host.serve("db", 6379, "db")
    host.serve("db", 7000, "db-7000")
    host.serve("web", 5000, "web")

    reached(host, "web", "10.88.0.10", 6379, "db")
    blocked(host, "other", "10.88.0.10", 6379)  # not in `from`
    blocked(host, "web", "10.88.0.10", 7000)  # not in `ports`
    # Unselected containers are unaffected: other reaches web, db (selected) still opens connections.
    reached(host, "other", "10.88.0.11", 5000, "web")
    reached(host, "db", "10.88.0.11", 5000, "web")


def test_policy_without_ports_admits_every_port_and_ping(host: Host) -> None:
    apply(host, spec({"all": {"to": ["db"], "from": ["web"]}}))
    host.serve("db", 7000, "db-7000")

    reached(host, "web", "10.88.0.10", 7000, "db-7000")
    assert host.run([*PING, "10.88.0.10"], netns="web", check=False).returncode == 0
    assert host.run([*PING, "10.88.0.10"], netns="other", check=False).returncode != 0
    blocked(host, "other", "10.88.0.10", 7000)


def test_published_port_admits_only_allowed_clients_once_selected(host: Host) -> None:
    lan = host.add_outside()  # 198.51.100.2
    far = host.add_outside("far", host_ip="203.0.113.1", ip="203.0.113.2")
    apply(host, spec({}))
    host.serve("front", 80, "front")
    reached(host, far.netns, far.host_ip, 8080, "front")  # no policy yet: anyone

    apply(host, spec({"front-from-lan": {"to": ["front"], "from": ["198.51.100.0/24"], "ports": ["80/tcp"]}}))

    reached(host, lan.netns, lan.host_ip, 8080, "front")
    blocked(host, far.netns, far.host_ip, 8080)
    blocked(host, "web", "10.88.0.13", 80)  # a container outside the CIDR, directly


# A client holding one connection open: it sends a line every 0.2 s and prints each echo; when an
# echo does not come within 2 s it prints "stalled" and exits.
HOLDER = r"""
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.settimeout(2)
n = 0
while True:
    n += 1
    try:
        s.sendall(b"%d\n" % n)
        if not s.recv(64):
            print("closed", flush=True)
            break
    except OSError as e:
        print("stalled", repr(e), flush=True)
        break
    print("ok", n, flush=True)
    time.sleep(0.2)
"""
ECHO = r"""
import socket, sys, threading
srv = socket.create_server(("0.0.0.0", int(sys.argv[1])))
print("listening", flush=True)
def echo(conn):
    with conn:
        while data := conn.recv(64):
            conn.sendall(data)
while True:
    conn, _ = srv.accept()
    threading.Thread(target=echo, args=(conn,), daemon=True).start()
"""


def wait_for(log: Path, word: str, timeout: float) -> str:
    """The log once `word` is in it; fails naming the word after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        if word in text:
            return text
        time.sleep(0.1)
    raise AssertionError(f"no {word!r} in {log} within {timeout} s:\n{log.read_text()}")


def test_established_connection_is_cut_when_its_allowance_goes(host: Host, tmp_path: Path) -> None:
    both = {
        "db-from-web": {"to": ["db"], "from": ["web"], "ports": ["6379/tcp"]},
        "db-from-other": {"to": ["db"], "from": ["other"], "ports": ["6379/tcp"]},
    }
    apply(host, spec(both))
    host.background(["ip", "netns", "exec", "db", sys.executable, "-c", ECHO, "6379"], tmp_path / "echo.log")
    wait_for(tmp_path / "echo.log", "listening", 10)
    cut, kept = tmp_path / "other.log", tmp_path / "web.log"
    host.background(["ip", "netns", "exec", "other", sys.executable, "-c", HOLDER, "10.88.0.10", "6379"], cut)
    host.background(["ip", "netns", "exec", "web", sys.executable, "-c", HOLDER, "10.88.0.10", "6379"], kept)
    wait_for(cut, "ok 3", 10)
    wait_for(kept, "ok 3", 10)

    apply(host, spec({"db-from-web": both["db-from-web"]}))

    wait_for(cut, "stalled", 10)
    # The connection that is still allowed carries on: five more echoes after the cut.
    text = kept.read_text()
    last = int(text.split()[-1]) if text.split()[-1].isdigit() else 0
    wait_for(kept, f"ok {last + 5}", 10)
    assert "stalled" not in kept.read_text()
    blocked(host, "other", "10.88.0.10", 6379)


def _rules(host: Host) -> dict[str, tuple[int, Any]]:
    """Every rule of every table: comment (or chain and position) -> (handle, its counter)."""
    ruleset = json.loads(host.run(["nft", "-j", "-a", "list", "ruleset"]).stdout)["nftables"]
    out: dict[str, tuple[int, Any]] = {}
    for obj in ruleset:
        rule = obj.get("rule")
        if rule is None:
            continue
        counter = next((e["counter"] for e in rule["expr"] if "counter" in e), None)
        key = f"{rule['family']} {rule['table']} {rule['chain']} {rule.get('comment', rule['handle'])}"
        out[key] = (rule["handle"], counter)
    return out


def test_membership_change_is_an_element_update(host: Host) -> None:
    apply(host, spec(DB_FROM_WEB))
    host.serve("db", 6379, "db")
    blocked(host, "other", "10.88.0.10", 6379)  # counts a drop
    before = _rules(host)
    dropped = [c for _, c in before.values() if c and c["packets"] > 0]
    assert dropped, before

    # A CIDR around a source container: the allowed space is cut into pieces the kernel lists back as
    # they were written (a second apply finds nothing to do).
    wider = {"db-from-lan": {"to": ["db"], "from": ["10.88.0.0/28"], "ports": ["7000-7010/tcp"]}}
    grown = spec({"db-from-web": {**DB_FROM_WEB["db-from-web"], "from": ["web", "other"]}, **wider})
    path = host.write_spec(grown, "grown.yaml")
    planned = json.loads(host.reconciler("apply", str(path), "--dry-run", "-o", "json").stdout)
    assert {a["kind"] for a in planned["actions"]} == {"nft-element"}, planned["actions"]
    apply(host, grown, "grown.yaml")

    after = _rules(host)
    assert {k: h for k, (h, _) in after.items()} == {k: h for k, (h, _) in before.items()}
    for key, (_, counter) in before.items():
        if counter is not None:
            assert after[key][1]["packets"] >= counter["packets"], (key, counter, after[key])
    reached(host, "other", "10.88.0.10", 6379, "db")
    assert host.reconciler("apply", str(path), "--dry-run", "--exit-code").returncode == 0


def test_explain_matches_the_kernel(host: Host) -> None:
    path = apply(host, spec(DB_FROM_WEB))
    host.serve("db", 6379, "db")
    for src, expected in (("web", 0), ("other", 1)):
        proc = host.reconciler("explain", str(path), src, "db", "6379/tcp")
        assert proc.returncode == expected, proc.stdout + proc.stderr
        conn = host.connect(src, "10.88.0.10", 6379, timeout=BLOCKED_TIMEOUT)
        assert conn.ok == (expected == 0), (src, conn, proc.stdout)


OVERLAY_HOSTS = ("host-a", "host-b", "host-c")
# A TCP connection from a chosen source address: "connected" or "timeout".
BOUND = r"""
import socket, sys
s = socket.socket()
s.bind((sys.argv[1], 0))
s.settimeout(1.5)
try:
    s.connect((sys.argv[2], int(sys.argv[3])))
    print("connected")
except TimeoutError:
    print("timeout")
"""


def overlay_spec(addresses: list[str]) -> dict[str, Any]:
    return {
        "version": 1,
        "name": "polov",
        "hosts": {name: {"address": addr} for name, addr in zip(OVERLAY_HOSTS, addresses, strict=True)},
        "networks": {"pets": {"driver": "overlay", "subnet": "10.210.0.0/24"}},
        "containers": {
            "web": {"host": "host-a", "networks": ["pets"]},
            "stranger": {"host": "host-a", "networks": ["pets"]},
            "api-1": {"host": "host-a", "networks": ["pets"]},
            "db": {"host": "host-b", "networks": ["pets"]},
            "api-2": {"host": "host-b", "networks": ["pets"]},
            "client": {"host": "host-c", "networks": ["pets"]},
            "other": {"host": "host-c", "networks": ["pets"]},
        },
        "services": {"api": {"network": "pets", "backends": ["api-1", "api-2"], "ports": ["8000:5000"]}},
        "policies": {
            "db-from-web": {"to": ["db"], "from": ["web"], "ports": ["6379/tcp"]},
            "api-from-clients": {
                "to": ["api"],
                "from": ["client", f"{UNDERLAY_PREFIX}.1/32"],
                "ports": ["5000/tcp"],
            },
        },
    }


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with make_cluster(len(OVERLAY_HOSTS), tmp_path) as c:
        yield c


def test_overlay_across_hosts_through_a_vip_and_the_routing_mesh(cluster: Cluster) -> None:
    a, b, c = cluster.hosts
    path = a.write_spec(overlay_spec(cluster.addresses))
    assert a.reconciler("lock", str(path)).returncode == 0
    for name, host in zip(OVERLAY_HOSTS, cluster.hosts, strict=True):
        proc = host.reconciler("apply", str(path), "--host", name)
        assert proc.returncode == 0, f"{name}: {proc.stdout}\n{proc.stderr}"
    b.serve("db", 6379, "db")
    a.serve("web", 80, "web")
    a.serve("api-1", 5000, "api-1")
    b.serve("api-2", 5000, "api-2")

    # Across hosts, checked at the destination: web (host-a) reaches db (host-b), other (host-c) not.
    reached(a, "web", "db", 6379, "db")
    blocked(c, "other", "db", 6379)
    reached(c, "other", "web", 80, "web")  # web is selected by nothing

    # Through the VIP, to backends on both hosts: client is admitted, stranger (beside api-1) is not.
    seen = {c.connect("client", "api", 5000).data.strip() for _ in range(12)}
    assert seen == {"api-1", "api-2"}, seen
    for _ in range(8):  # each try goes to either backend: both are tried but once in 128 runs
        blocked(a, "stranger", "api", 5000)
    blocked(c, "other", "api", 5000)
    # The routing mesh from the underlay's own address, which one policy names, and from another
    # address of the underlay's, which none does (judged where the mesh translates it).
    cluster.underlay.run(f"ip addr add {UNDERLAY_PREFIX}.2/24 dev ul")
    a.serve(None, 7100, "host-a")  # the control: .2 reaches host-a itself
    bound = [sys.executable, "-c", BOUND, f"{UNDERLAY_PREFIX}.2"]
    assert cluster.underlay.run([*bound, cluster.addresses[0], "7100"]).stdout.strip() == "connected"
    for address in cluster.addresses:
        conn = cluster.underlay.connect(None, address, 8000)
        assert conn.ok and conn.data.strip() in ("api-1", "api-2"), (address, conn)
        assert cluster.underlay.run([*bound, address, "8000"]).stdout.strip() == "timeout", address
    for name, host in zip(OVERLAY_HOSTS, cluster.hosts, strict=True):
        again = host.reconciler("apply", str(path), "--host", name, "--dry-run", "--exit-code")
        assert again.returncode == 0, f"{name}: {again.stdout}"


def macvlan_spec(policies: dict[str, Any]) -> dict[str, Any]:
    lan = {"driver": "macvlan", "parent": "lan0", "subnet": "192.168.10.0/24", "gateway": "192.168.10.1"}
    addressed = {n: {"networks": {"lan": {"ipv4_address": a}}} for n, a in (("db", "192.168.10.10"),
                 ("web", "192.168.10.11"), ("other", "192.168.10.12"))}  # fmt: skip
    return {
        "version": 1,
        "name": "polmv",
        "networks": {"lan": lan},
        "containers": addressed,
        "policies": policies,
    }


def test_macvlan_siblings_and_the_lan(host: Host, tmp_path: Path) -> None:
    """A macvlan child gets frames from its siblings and the LAN without the host's forward hook: the
    policy is enforced in the container's namespace."""
    host.run(
        "ip netns add router && ip link add lan0 type veth peer name eth0 netns router && ip link set lan0 up"
    )
    host.run(
        "ip addr add 192.168.10.1/24 dev eth0 && ip link set eth0 up && ip link set lo up", netns="router"
    )
    path = apply(host, macvlan_spec({"db-from-web": {"to": ["db"], "from": ["web"], "ports": ["6379/tcp"]}}))
    host.serve("db", 6379, "db")
    host.serve("web", 80, "web")

    reached(host, "web", "192.168.10.10", 6379, "db")  # a sibling, admitted
    blocked(host, "other", "192.168.10.10", 6379)  # a sibling, not admitted
    blocked(host, "router", "192.168.10.10", 6379)  # the LAN, not admitted
    reached(host, "router", "192.168.10.11", 80, "web")  # web is selected by nothing
    assert host.reconciler("apply", str(path), "--dry-run", "--exit-code").returncode == 0

    # The router joins the policy: an element update in db's namespace, nothing else.
    grown = macvlan_spec(
        {"db-from-web": {"to": ["db"], "from": ["web", "192.168.10.1"], "ports": ["6379/tcp", "7379/tcp"]}}
    )
    planned = json.loads(
        host.reconciler("apply", str(host.write_spec(grown, "g.yaml")), "--dry-run", "-o", "json").stdout
    )
    assert [(a["kind"], a["op"]) for a in planned["actions"]] == [("ns-policy", "change")], planned
    apply(host, grown, "g.yaml")
    reached(host, "router", "192.168.10.10", 6379, "db")

    # The router's allowance goes: its open connection is cut in db's namespace.
    host.background(["ip", "netns", "exec", "db", sys.executable, "-c", ECHO, "7379"], tmp_path / "echo.log")
    wait_for(tmp_path / "echo.log", "listening", 10)
    held = tmp_path / "router.log"
    holder = [sys.executable, "-c", HOLDER, "192.168.10.10", "7379"]
    host.background(["ip", "netns", "exec", "router", *holder], held)
    wait_for(held, "ok 3", 10)
    apply(host, macvlan_spec({"db-from-web": DB_FROM_WEB["db-from-web"]}), "back.yaml")
    wait_for(held, "stalled", 10)

    # Without any policy the namespace's table goes.
    apply(host, macvlan_spec({}), "none.yaml")
    reached(host, "other", "192.168.10.10", 6379, "db")
    assert "netreconciler" not in host.run(["nft", "list", "tables"], netns="db").stdout
    proc = host.reconciler("destroy", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


# A UDP probe: "refused" when an ICMP port unreachable comes back, "silent" when nothing does.
UDP_PROBE = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.5)
s.connect((sys.argv[1], int(sys.argv[2])))
s.send(b"?")
try:
    s.recv(64)
    print("answered")
except ConnectionRefusedError:
    print("refused")
except TimeoutError:
    print("silent")
"""


def test_icmp_errors_of_allowed_flows_pass(host: Host) -> None:
    """web is isolated too (only db may reach it, on tcp): the port unreachable db's kernel sends back
    for web's datagram passes as related; a datagram no policy admits gets nothing back at all."""
    apply(host, spec({
        "db-from-web": {"to": ["db"], "from": ["web"], "ports": ["7000/udp"]},
        "web-from-db": {"to": ["web"], "from": ["db"], "ports": ["5000/tcp"]},
    }))  # fmt: skip
    probe = [sys.executable, "-c", UDP_PROBE, "10.88.0.10"]
    assert host.run([*probe, "7000"], netns="web").stdout.strip() == "refused"
    assert host.run([*probe, "7001"], netns="web").stdout.strip() == "silent"  # not admitted: dropped
    assert host.run([*probe, "7000"], netns="other").stdout.strip() == "silent"


def test_ipv6_sources_are_judged_as_ipv4_ones(host: Host) -> None:
    data = spec(DB_FROM_WEB)
    data["networks"]["net"]["subnet"] = ["10.88.0.0/24", "fd00:88::/64"]
    for name, last in (("db", "10"), ("web", "11"), ("other", "12"), ("front", "13")):
        data["containers"][name]["networks"]["net"]["ipv6_address"] = f"fd00:88::{last}"
    data["containers"]["front"]["ports"] = []
    apply(host, data)
    host.serve("db", 6379, "db", dual=True)

    for target in ("fd00:88::10", "10.88.0.10"):
        reached(host, "web", target, 6379, "db")
        blocked(host, "other", target, 6379)
