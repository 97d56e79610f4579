"""Cluster-wide IPAM through etcd transactions, under random interleavings (hypothesis): several
hosts claim addresses from a small overlay subnet at the same time, against a real 3-member etcd
cluster started inside a sandbox. No address is ever given twice, every host programs what the
store holds, and a static address two hosts ask for goes to one of them, the other refused naming it.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from etcd_members import Members, start_members
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sandbox import REPO, Host, require_root

pytestmark = pytest.mark.integration

ADDRESSES = ["10.250.0.2", "10.250.0.3", "10.250.0.4"]
SUBNET = "10.241.0.0/27"  # 29 usable addresses besides the gateway: hashed slots collide often
STATIC = "10.241.0.20"
_scopes = itertools.count()


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Host, Members]]:
    require_root()
    workdir = tmp_path_factory.mktemp("etcd-ipam")
    with Host(workdir=workdir) as host:
        host.run("ip link set lo up")
        for a in ADDRESSES:
            host.run(f"ip addr add {a}/32 dev lo")
        members = start_members(host, ADDRESSES, workdir)
        try:
            yield host, members
        finally:
            members.stop_all()


pauses = st.lists(st.floats(min_value=0, max_value=0.02), min_size=1, max_size=6)


@st.composite
def plans(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(min_value=2, max_value=4))
    hosts: dict[str, Any] = {}
    static_takers = draw(st.sets(st.integers(min_value=0, max_value=count - 1), max_size=2))
    for h in range(count):
        waits = draw(pauses)
        containers = [[f"c{h}x{i}", None] for i in range(len(waits))]
        if h in static_takers:
            containers[draw(st.integers(0, len(containers) - 1))][1] = STATIC
        hosts[f"h{h}"] = {"vtep": f"192.0.2.{11 + h}", "containers": containers, "pauses": waits}
    return {"scope": f"race{next(_scopes)}", "subnet": SUBNET, "hosts": hosts}


def run_plan(host: Host, members: Members, plan: dict[str, Any]) -> dict[str, Any]:
    plan = {**plan, "endpoints": members.endpoints}
    proc = host.run(
        [sys.executable, str(REPO / "tests/integration/store_race.py")],
        input=json.dumps(plan),
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=plans())
def test_concurrent_allocation_never_collides(etcd: tuple[Host, Members], plan: dict[str, Any]) -> None:
    host, members = etcd
    result = run_plan(host, members, plan)
    keys, hosts = result["keys"], result["hosts"]
    assert set(hosts) == set(plan["hosts"]), result

    # One key per address: an endpoint holds at most one, and every address is in the subnet.
    owners = [(v["kind"], v["name"]) for v in keys.values()]
    assert len(owners) == len(set(owners)), f"an endpoint holds two addresses: {keys}"
    held = {v["name"]: v["address"] for v in keys.values() if v["kind"] == "container"}
    assert all(k.endswith("/" + v["address"]) for k, v in keys.items()), keys

    # Each host programs exactly what the store holds (its own containers and the others'), and
    # across hosts no address stands for two containers.
    by_address: dict[str, str] = {}
    for name, got in hosts.items():
        for container, address in got["allocation"].items():
            assert held.get(container) == address, (name, container, address, keys)
            assert by_address.setdefault(address, container) == container, (by_address, container)

    # The static address: whoever holds it (a taker, or a host that drew it before any taker asked:
    # other hosts do not know this host's static addresses), every other taker was refused, naming
    # the holder.
    holder = next((v for v in keys.values() if v["address"] == STATIC), None)
    takers = [(h, c) for h, p in plan["hosts"].items() for c, a in p["containers"] if a == STATIC]
    for h, c in takers:
        if held.get(c) != STATIC:
            assert holder is not None, result
            named = f"{STATIC} is already taken in the store by {holder['kind']} {holder['name']}"
            assert any(named in p for p in hosts[h]["problems"]), (h, c, result)
    # Everything not refused got its address (29 free addresses outnumber the endpoints).
    wanted = {c for p in plan["hosts"].values() for c, a in p["containers"] if a != STATIC}
    assert wanted <= set(held), (wanted - set(held), result)
