"""An encrypted overlay in etcd mode: three sandboxed hosts on a sandboxed switch, a 3-member etcd
there, and a spec without `hosts:`. Each host makes its key with `reconciler keygen` at the default
path and runs `reconciler watch SPEC --host NAME --advertise ADDRESS`; its public key reaches the
others only through its registration in the store. What crosses the switch is captured with tcpdump.

Covered: traffic across hosts by name inside WireGuard; each host's device has exactly the other
hosts' keys as peers, at their advertised addresses; on the switch only WireGuard's port between the
hosts, no VXLAN in clear, and never the payload. Every wait polls with a deadline.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sandbox import Host
from test_etcd_store import HOSTS, Fleet, made_fleet, on_pets, said, spec_data, start_fleet
from test_watch import wait_for
from test_wireguard import KEY_FILE, PRIVATE_DIRS, WG_PORT, Capture, keygen, udp_flows, vnis

from reconciler.drivers.overlay.wireguard import TUNNEL_VXLAN_PORT
from reconciler.names import wireguard_ifname

pytestmark = pytest.mark.integration

SUBNET = "10.231.0.0/24"
HOSTS_KEY = "/netreconciler/pets/hosts"
DEVICE = wireguard_ifname("pets")  # the scope is the spec's name


@pytest.fixture
def keyed_fleet(tmp_path: Path) -> Iterator[tuple[Fleet, dict[str, str]]]:
    """The fleet of test_etcd_store with a private /etc/netreconciler and /run/wireguard per host, and
    each host's public key from `reconciler keygen` (by host name)."""
    with made_fleet(tmp_path, PRIVATE_DIRS) as made:
        keys = {name: keygen(host) for name, host in zip(HOSTS, made.cluster.hosts, strict=True)}
        yield made, keys


def encrypted_spec(containers: dict[str, Any], ttl: int = 10) -> dict[str, Any]:
    data = spec_data(containers, ttl)
    data["networks"] = {"pets": {"driver": "overlay", "subnet": SUBNET, "encrypted": True}}
    assert "hosts" not in data
    return data


def wg_peers(host: Host) -> dict[str, str]:
    """The device's peers: public key -> endpoint, from `wg show DEV dump` (its first line is the
    interface's own, with the private key: never returned or printed)."""
    lines = host.run(["wg", "show", DEVICE, "dump"]).stdout.splitlines()
    assert lines, f"no WireGuard device {DEVICE}"
    return {fields[0]: fields[2] for fields in (line.split("\t") for line in lines[1:])}


def own_public_key(host: Host) -> str:
    return host.run(["wg", "show", DEVICE, "public-key"]).stdout.strip()


def test_encrypted_overlay_with_peers_from_the_store(keyed_fleet: tuple[Fleet, dict[str, str]]) -> None:
    fleet, keys = keyed_fleet
    c = fleet.cluster
    a, b, h3 = (fleet.host(n) for n in HOSTS)
    # From before the first reconcile: nothing leaves in clear while the tunnels come up either.
    capture = Capture(c.underlay, "etcd-wg")
    start_fleet(
        fleet,
        {
            "host-a": encrypted_spec(on_pets("web")),
            "host-b": encrypted_spec(on_pets("db")),
            "host-c": encrypted_spec(on_pets("worker")),
        },
    )
    da, dc = fleet.daemons["host-a"], fleet.daemons["host-c"]
    b.serve("db", 6379, "db-on-b")
    a.serve("web", 8080, "web-on-a")
    secret = "SECRET-PAYLOAD-e7c0"
    # The first connections carry the secret too: sent before any handshake is done.
    wait_for(
        "web on host-a to reach db on host-b by name",
        lambda: a.connect("web", "db", 6379, payload=secret).data == "db-on-b\n",
        da,
    )
    wait_for(
        "worker on host-c to reach web on host-a by name",
        lambda: h3.connect("worker", "web", 8080, payload=secret).data == "web-on-a\n",
        dc,
    )
    conn = a.connect("web", "db", 6379, payload=secret * 50)
    assert conn.ok and conn.data == "db-on-b\n", conn
    raw, lines = capture.stop()

    # On the switch: WireGuard between the hosts' ports, no VXLAN in clear, never the payload.
    assert secret.encode() not in raw
    flows = udp_flows(lines)
    assert (WG_PORT, WG_PORT) in flows, lines
    assert flows <= {(WG_PORT, WG_PORT)}, flows
    assert not any(4789 in f or TUNNEL_VXLAN_PORT in f for f in flows), flows
    assert vnis(lines) == set(), lines

    # Each device: its own key is the one keygen made, its peers the other hosts' registered keys.
    for name, host, address in zip(HOSTS, c.hosts, c.addresses, strict=True):
        assert own_public_key(host) == keys[name], name
        expected = {
            keys[other]: f"{addr}:{WG_PORT}"
            for other, addr in zip(HOSTS, c.addresses, strict=True)
            if other != name
        }
        assert wg_peers(host) == expected, (name, address)
        registered = json.loads(fleet.etcd.etcdctl("get", "--print-value-only", f"{HOSTS_KEY}/{name}"))
        assert registered == {"address": address, "public_key": keys[name]}, registered


def test_a_new_key_and_a_dead_host_reach_the_peers_through_the_store(
    keyed_fleet: tuple[Fleet, dict[str, str]],
) -> None:
    fleet, keys = keyed_fleet
    ttl = 3
    placed = {"host-a": "web", "host-b": "db", "host-c": "worker"}
    start_fleet(fleet, {host: encrypted_spec(on_pets(c), ttl) for host, c in placed.items()})
    a, b, _ = (fleet.host(n) for n in HOSTS)
    da, db_ = fleet.daemons["host-a"], fleet.daemons["host-b"]
    b.serve("db", 6379, "db-on-b")
    wait_for("web to reach db", lambda: a.connect("web", "db", 6379).data == "db-on-b\n", da)

    # host-b's daemon restarted with a new key: host-a's device follows its registration, and
    # traffic flows under the new key.
    db_.signal(signal.SIGTERM)
    assert db_.wait(timeout=30) == 0, db_.output()
    b.run(["rm", KEY_FILE])
    new = keygen(b)
    fleet.start("host-b")
    wait_for("host-a's peer to take host-b's new key", lambda: new in wg_peers(a), da)
    assert keys["host-b"] not in wg_peers(a)
    wait_for(
        "web to reach db under the new key", lambda: a.connect("web", "db", 6379).data == "db-on-b\n", da
    )
    handshakes = a.run(["wg", "show", DEVICE, "latest-handshakes"]).stdout
    assert any(line.split()[0] == new and int(line.split()[1]) > 0 for line in handshakes.splitlines()), (
        handshakes
    )

    # host-c's daemon killed: after its TTL its registration expires, and its peer leaves the others.
    fleet.daemons["host-c"].signal(signal.SIGKILL)
    wait_for("host-c's peer to leave host-a", lambda: keys["host-c"] not in wg_peers(a), da)
    wait_for(
        "host-c's peer to leave host-b", lambda: keys["host-c"] not in wg_peers(b), fleet.daemons["host-b"]
    )
    assert set(wg_peers(a)) == {new}
    assert a.connect("web", "db", 6379).data == "db-on-b\n"


def test_a_copied_key_is_refused_on_the_host_that_registered_it_second(
    keyed_fleet: tuple[Fleet, dict[str, str]],
) -> None:
    fleet, keys = keyed_fleet
    a, b, h3 = (fleet.host(n) for n in HOSTS)
    start_fleet(
        fleet, {"host-a": encrypted_spec(on_pets("web")), "host-c": encrypted_spec(on_pets("worker"))}
    )
    a.serve("web", 8080, "web-on-a")
    wait_for("worker to reach web", lambda: h3.connect("worker", "web", 8080).data == "web-on-a\n")

    # host-b gets host-a's key file (a cloned machine): host-b refuses and changes nothing; host-a
    # and host-c leave it out and keep their peers.
    b.run(f"umask 077 && cat > {KEY_FILE}", input=a.run(["cat", KEY_FILE]).stdout)
    fleet.write("host-b", encrypted_spec(on_pets("db")))
    db_ = fleet.start("host-b")
    refusal = f"host host-b's WireGuard public key {keys['host-a']} is registered by host host-a too"
    wait_for("host-b's refusal", lambda: said(db_, refusal), db_)
    assert "db" not in b.netns_list() and DEVICE not in b.links()
    assert set(wg_peers(a)) == {keys["host-c"]} and set(wg_peers(h3)) == {keys["host-a"]}
    assert h3.connect("worker", "web", 8080).data == "web-on-a\n"

    # A key of its own and a restart: host-b joins.
    db_.signal(signal.SIGTERM)
    assert db_.wait(timeout=30) == 0, db_.output()
    b.run(["rm", KEY_FILE])
    own = keygen(b)
    fleet.start("host-b")
    wait_for("db on host-b", lambda: "db" in b.netns_list(), fleet.daemons["host-b"])
    b.serve("db", 6379, "db-on-b")
    wait_for(
        "web to reach db", lambda: a.connect("web", "db", 6379).data == "db-on-b\n", fleet.daemons["host-a"]
    )
    assert set(wg_peers(a)) == {keys["host-c"], own}
