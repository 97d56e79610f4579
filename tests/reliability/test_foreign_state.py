"""Foreign state: a host already running other software (bridges, veths, routes, a namespace with its
hosts file, an `inet filter` table, a Docker-like `ip nat` table and a docker0 bridge) keeps every one of
those objects byte-identical through a sequence of applies, a refused apply and destroys of two scopes.

"Byte-identical" is `ip -d -j` link, address and route dumps (every family and table), the foreign
namespace's own dumps, `nft -j list ruleset` without our tables (handles included), the namespace list
and the foreign hosts file, compared as JSON; only bridge timers, which tick by themselves, are dropped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from figures import FIGURES
from hostcheck import diff, raw
from sandbox import Host

pytestmark = pytest.mark.integration

SPECS = Path(__file__).resolve().parents[2] / "specs"
MARK = "netreconciler"

SEED = """
set -e
ip link add docker0 type bridge
ip addr add 172.17.0.1/16 dev docker0
ip link set docker0 up
ip link add br-foreign type bridge
ip addr add 10.99.0.1/24 dev br-foreign
ip link set br-foreign up
ip link add fveth0 type veth peer name fveth1
ip link set fveth0 master br-foreign up
ip link set fveth1 up
ip addr add 10.99.0.2/24 dev fveth1
ip route add 10.98.0.0/16 via 10.99.0.254 dev br-foreign
ip route add 203.0.113.0/24 dev br-foreign proto static metric 50
ip netns add foreignns
ip link add fns0 type veth peer name eth0 netns foreignns
ip link set fns0 up
ip -n foreignns link set lo up
ip -n foreignns link set eth0 up
ip -n foreignns addr add 10.97.0.2/24 dev eth0
ip -n foreignns route add default via 10.97.0.1 dev eth0
mkdir -p /etc/netns/foreignns
printf '10.97.0.1 gateway\\n' > /etc/netns/foreignns/hosts
nft -f - <<'NFT'
table inet filter {
    chain input {
        type filter hook input priority filter; policy accept;
        ct state established,related accept
        iifname "lo" accept
        tcp dport 22 accept comment "ssh"
    }
    chain forward {
        type filter hook forward priority filter; policy drop;
        iifname "docker0" accept
    }
}
table ip nat {
    chain PREROUTING {
        type nat hook prerouting priority dstnat; policy accept;
        fib daddr type local jump DOCKER
    }
    chain OUTPUT {
        type nat hook output priority -100; policy accept;
        ip daddr != 127.0.0.0/8 fib daddr type local jump DOCKER
    }
    chain POSTROUTING {
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr 172.17.0.0/16 oifname != "docker0" masquerade
    }
    chain DOCKER {
        iifname "docker0" return
        iifname != "docker0" tcp dport 8080 dnat to 172.17.0.2:80
    }
}
NFT
"""


def _no_timers(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _no_timers(v) for k, v in obj.items() if not k.endswith("_timer")}
    if isinstance(obj, list):
        return [_no_timers(v) for v in obj]
    return obj


def _our_nft(obj: dict[str, Any]) -> bool:
    ((kind, body),) = obj.items()
    return str(body["name"] if kind == "table" else body["table"]).startswith(MARK)


def foreign(host: Host) -> dict[str, Any]:
    """Everything on the host that is not ours."""
    data = raw(host, full=True)
    ours = {x["ifname"] for x in data["host"]["links"] if (x.get("ifalias") or "").startswith(MARK)}
    host_space = data["host"]
    spaces = {
        ns: {k: v for k, v in space.items() if k.startswith("all_") or k == "links"}
        for ns, space in data["netns"].items()
        if not any((x.get("ifalias") or "").startswith(MARK) for x in space["links"] if x["ifname"] == "lo")
    }
    return _no_timers(
        {
            "links": [x for x in host_space["links"] if x["ifname"] not in ours],
            "addrs": [a for a in host_space["all_addrs"] if a["ifname"] not in ours],
            "routes": [
                r for r in host_space["all_routes"] + host_space["all_routes6"] if r.get("dev") not in ours
            ],
            "netns": spaces,
            "nft": [o for o in data["nft"] if "metainfo" not in o and not _our_nft(o)],
            "files": {p: c for p, c in data["files"].items() if p.startswith("/etc/netns/foreignns")},
        }
    )


def count(seen: dict[str, Any]) -> int:
    return (
        len(seen["links"])
        + len(seen["addrs"])
        + len(seen["routes"])
        + len(seen["nft"])
        + sum(len(v) for s in seen["netns"].values() for v in s.values())
        + len(seen["files"])
    )


def test_foreign_objects_stay_byte_identical(host: Host) -> None:
    host.run(SEED)
    # IPv6 duplicate address detection changes the seeded links by itself for a second or two: wait.
    tentative = "ip -6 addr show tentative; ip -n foreignns -6 addr show tentative"
    host.run(f'while [ -n "$({tentative})" ]; do sleep 0.1; done', timeout=30)
    seeded = foreign(host)
    assert seeded["files"] and seeded["netns"] and any("DOCKER" in json.dumps(o) for o in seeded["nft"])
    pets, isolated = SPECS / "pets-bridge.yaml", SPECS / "isolated-networks.yaml"
    # pets without web: a container and its port go, the rest stays
    smaller = host.write_spec(
        {
            "version": 1,
            "name": "pets",
            "networks": {"mybridge": {}},
            "containers": {"db": {"networks": ["mybridge"]}},
        }
    )
    clash = host.write_spec({"version": 1, "name": "clash", "containers": {"foreignns": {}}}, "clash.yaml")
    steps = [
        ("apply", pets, 0),
        ("apply", isolated, 0),
        ("apply", smaller, 0),
        ("apply", clash, 1),  # a container named like the foreign namespace: refused, nothing changed
        ("apply", pets, 0),
        ("destroy", isolated, 0),
        ("destroy", pets, 0),
    ]
    for command, spec, code in steps:
        proc = host.reconciler(command, str(spec))
        assert proc.returncode == code, f"{command} {spec.name}: {proc.returncode}\n{proc.stderr}"
        now = foreign(host)
        assert now == seeded, f"after {command} {spec.name}:\n  " + "\n  ".join(diff(seeded, now))
        FIGURES["foreign_checks"] += 1
    FIGURES["foreign"] += count(seeded)
