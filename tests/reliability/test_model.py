"""Model-based convergence (hypothesis): random sequences of specs applied one after another in a sandbox.

Each step adds, removes or changes networks (fixed or auto-picked subnets, internal, icc, MTU),
containers (their networks in any order, static addresses) and published ports. After every apply the
second plan must be empty and the host, read with iproute2 and nft rather than the reconciler, must hold
what the spec says. Some steps then drift the host by hand (a veth deleted, an address changed, a route
or an nft element deleted, a bridge set down, a hosts file removed); the next apply must converge too.

CI runs DEFAULT_RUNS sequences with a fixed seed; `--runs N` runs N random ones (a soak run).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
from figures import FIGURES
from hostcheck import assert_no_duplicates, fingerprint, raw
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sandbox import Host

pytestmark = pytest.mark.integration

DEFAULT_RUNS = 10
MAX_STEPS = 5
SCOPE = "model"
TABLE = f"netreconciler_{SCOPE}"
NETWORKS = {"a": "10.60.0.0/24", "b": "10.61.0.0/24", "c": "10.62.0.0/24", "d": "10.63.0.0/24"}
CONTAINERS = [f"m{i}" for i in range(6)]
DRIFTS = ["veth", "address", "route", "nft-element", "bridge-down", "hosts"]


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    networks: dict[str, Any] = {}
    for name in draw(st.lists(st.sampled_from(sorted(NETWORKS)), unique=True, max_size=4)):
        net: dict[str, Any] = {}
        if draw(st.booleans()):
            net["subnet"] = NETWORKS[name]
        if draw(st.integers(0, 3)) == 0:
            net["internal"] = True
        if draw(st.integers(0, 3)) == 0:
            net["icc"] = False
        mtu = draw(st.sampled_from([None, None, 1400, 1500]))
        if mtu:
            net["mtu"] = mtu
        networks[name] = net
    containers: dict[str, Any] = {}
    for i, name in enumerate(draw(st.lists(st.sampled_from(CONTAINERS), unique=True, max_size=6))):
        attached = draw(st.lists(st.sampled_from(sorted(networks)), unique=True)) if networks else []
        ctr: dict[str, Any] = {"networks": attached}
        static = [n for n in attached if "subnet" in networks[n]]
        if static and draw(st.booleans()):
            subnet = ipaddress.IPv4Network(networks[static[0]]["subnet"])
            ctr["networks"] = {n: {} for n in attached}
            ctr["networks"][static[0]] = {"ipv4_address": str(subnet.network_address + 100 + i)}
        if any(not networks[n].get("internal") for n in attached):
            ports = draw(st.sampled_from([[], [f"{8000 + i}:80"], [f"{8000 + i}:80", f"{9000 + i}:53/udp"]]))
            if ports:
                ctr["ports"] = ports
        containers[name] = ctr
    return {"version": 1, "name": SCOPE, "networks": networks, "containers": containers}


steps = st.lists(
    st.tuples(specs(), st.one_of(st.none(), st.tuples(st.sampled_from(DRIFTS), st.integers(0, 1000)))),
    min_size=1,
    max_size=MAX_STEPS,
)


def apply(host: Host, spec: dict[str, Any]) -> None:
    path = host.write_spec(spec)
    proc = host.reconciler("apply", str(path))
    assert proc.returncode == 0, f"apply exited {proc.returncode}:\n{json.dumps(spec)}\n{proc.stderr}"
    proc = host.reconciler("apply", str(path), "--dry-run", "--exit-code")
    assert proc.returncode == 0, f"second plan not empty:\n{json.dumps(spec)}\n{proc.stdout}{proc.stderr}"


def check_matches(host: Host, spec: dict[str, Any]) -> None:
    """The host holds what the spec says, read with iproute2 (not with the reconciler)."""
    found = fingerprint(host)
    assert_no_duplicates(found)
    assert sorted(found["netns"]) == sorted(spec["containers"])
    bridges = [link for link in found["host"]["links"] if link["kind"] == "bridge"]
    assert sorted(b["alias"] for b in bridges) == sorted(
        f"netreconciler:{SCOPE}:network:{n}" for n in spec["networks"]
    )
    for name, ctr in spec["containers"].items():
        space = found["netns"][name]
        attached = list(ctr["networks"])
        ifaces = {x["ifname"]: x for x in space["links"] if x["ifname"] != "lo"}
        assert sorted(ifaces) == sorted(f"eth{i}" for i in range(len(attached))), (name, ifaces)
        for i, net in enumerate(attached):
            eth = ifaces[f"eth{i}"]
            assert eth["alias"] == f"netreconciler:{SCOPE}:iface:{name}/{net}" and eth["up"], eth
            assert eth["mtu"] == spec["networks"][net].get("mtu", 1500), eth
            addrs = [a.split()[1] for a in space["addrs"] if a.startswith(f"eth{i} ")]
            assert len(addrs) == 1, (name, net, addrs)
            iface = ipaddress.IPv4Interface(addrs[0])
            if "subnet" in spec["networks"][net]:
                assert iface.network == ipaddress.IPv4Network(spec["networks"][net]["subnet"]), iface
            options = ctr["networks"][net] if isinstance(ctr["networks"], dict) else {}
            if options.get("ipv4_address"):
                assert str(iface.ip) == options["ipv4_address"]
        routed = any(not spec["networks"][n].get("internal") for n in attached)
        defaults = [r for r in space["routes"] if '"dst": "default"' in r]
        assert len(defaults) == (1 if routed else 0), (name, defaults)
    ports = sum(len(c.get("ports", [])) for c in spec["containers"].values())
    elements = [json.loads(o) for o in found["nft"] if '"elem"' in o and "ports_addr" in o]
    assert sum(len(e["map"]["elem"]) for e in elements) == ports


def drift(host: Host, kind: str, pick: int) -> bool:
    """Change the host by hand; False when there was nothing of that kind to change."""
    data = raw(host)
    spaces = sorted(ns for ns, s in data["netns"].items() if any(x["ifname"] == "eth0" for x in s["links"]))
    if kind == "veth":
        veths = sorted(x["ifname"] for x in data["host"]["links"] if x["ifname"].startswith("nrv"))
        if not veths:
            return False
        host.run(["ip", "link", "del", veths[pick % len(veths)]])
    elif kind == "bridge-down":
        bridges = sorted(x["ifname"] for x in data["host"]["links"] if x["ifname"].startswith("nr-"))
        if not bridges:
            return False
        host.run(["ip", "link", "set", bridges[pick % len(bridges)], "down"])
    elif kind in ("address", "route", "hosts"):
        if not spaces:
            return False
        ns = spaces[pick % len(spaces)]
        if kind == "address":
            host.run(["ip", "addr", "flush", "dev", "eth0"], netns=ns)
            host.run(["ip", "addr", "add", "10.99.99.99/24", "dev", "eth0"], netns=ns)
        elif kind == "route":
            host.run(["ip", "route", "flush", "default"], netns=ns)
        else:
            host.run(["rm", "-f", f"/etc/netns/{ns}/hosts"])
    else:
        sets = [
            (kind_, body)
            for obj in data["nft"]
            for kind_, body in obj.items()
            if kind_ in ("set", "map") and body.get("table") == TABLE and body.get("elem")
        ]
        if not sets:
            return False
        kind_, body = sets[pick % len(sets)]
        elem = body["elem"][pick % len(body["elem"])]
        key = elem[0] if kind_ == "map" else elem
        command = {"delete": {"element": {k: body[k] for k in ("family", "table", "name")} | {"elem": [key]}}}
        host.run(["nft", "-j", "-f", "-"], input=json.dumps({"nftables": [command]}))
    return True


def test_random_spec_sequences_converge(host: Host, request: pytest.FixtureRequest) -> None:
    runs = request.config.getoption("--runs")
    empty = host.write_spec({"version": 1, "name": SCOPE}, "empty.yaml")

    @settings(
        max_examples=runs or DEFAULT_RUNS,
        derandomize=runs is None,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(steps)
    def sequence(sequence_steps: list[tuple[dict[str, Any], tuple[str, int] | None]]) -> None:
        assert host.reconciler("destroy", str(empty)).returncode == 0
        FIGURES["sequences"] += 1
        for spec, change in sequence_steps:
            apply(host, spec)
            check_matches(host, spec)
            FIGURES["steps"] += 1
            if change is not None and drift(host, *change):
                apply(host, spec)
                check_matches(host, spec)
                FIGURES["drifts"] += 1

    sequence()
