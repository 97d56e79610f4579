"""Network policy against the real kernel: allow-lists checked by real TCP connections, each denial
beside a control that succeeds (the same client to an unselected container, or an allowed client).

Bridge (one host, published ports), established connections cut when their allowance goes, and
membership changes as nft element updates only (handles and counters of every rule unchanged).
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
