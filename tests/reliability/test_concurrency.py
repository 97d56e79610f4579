"""Concurrency: applies started at the same instant never interleave (the state directory's flock).

Two applies of the same 20-container spec: if they interleaved, both would plan the same creations
and one would fail on an existing object; serialized, the second observes the first's result and
plans nothing. Two applies of different scopes with auto-picked subnets: interleaved, both could pick
the same free subnet; serialized, the second sees the first's record and picks another.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import threading
from typing import Any

import pytest
from figures import FIGURES
from sandbox import Host
from test_crash import SPEC

pytestmark = pytest.mark.integration

ROUNDS = 2


def together(host: Host, *argvs: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
    """Run reconciler commands in parallel, released at the same instant."""
    start = threading.Barrier(len(argvs))
    results: list[Any] = [None] * len(argvs)

    def run(i: int) -> None:
        start.wait()
        results[i] = host.reconciler(*argvs[i], env={"RECONCILER_LOCK_WAIT": "300"}, timeout=600)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(argvs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_two_applies_of_one_spec_serialize(host: Host) -> None:
    spec = host.write_spec(SPEC)
    for _ in range(ROUNDS):
        procs = together(host, ("apply", str(spec), "-o", "json"), ("apply", str(spec), "-o", "json"))
        assert all(p.returncode == 0 for p in procs), [p.stderr for p in procs]
        plans = sorted(len(json.loads(p.stdout)["actions"]) for p in procs)
        assert plans[0] == 0 and plans[1] > 0, f"one apply must see the other's result: {plans}"
        assert host.reconciler("apply", str(spec), "--dry-run", "--exit-code").returncode == 0
        assert host.reconciler("destroy", str(spec)).returncode == 0
        FIGURES["concurrent"] += 1


def _auto(name: str) -> dict[str, Any]:
    return {
        "version": 1,
        "name": name,
        "networks": {"net": {}},
        "containers": {f"{name}{i}": {"networks": ["net"]} for i in range(4)},
    }


def test_two_scopes_applied_at_once_get_distinct_subnets(host: Host) -> None:
    one, two = host.write_spec(_auto("one"), "one.yaml"), host.write_spec(_auto("two"), "two.yaml")
    for _ in range(ROUNDS):
        procs = together(host, ("apply", str(one)), ("apply", str(two)))
        assert all(p.returncode == 0 for p in procs), [p.stderr for p in procs]
        subnets = [ipaddress.IPv4Network(host.show(s)["networks"]["net"]["subnet"]) for s in (one, two)]
        assert not subnets[0].overlaps(subnets[1]), subnets
        for spec in (one, two):
            assert host.reconciler("apply", str(spec), "--dry-run", "--exit-code").returncode == 0
        procs = together(host, ("destroy", str(one)), ("destroy", str(two)))
        assert all(p.returncode == 0 for p in procs), [p.stderr for p in procs]
        assert host.netns_list() == []
        FIGURES["concurrent"] += 1


def test_lock_file_is_the_only_thing_left(host: Host) -> None:
    spec = host.write_spec(SPEC)
    together(host, ("apply", str(spec)), ("destroy", str(spec)))
    assert host.reconciler("destroy", str(spec)).returncode == 0
    assert host.run("ls -A /var/lib/reconciler").stdout.split() == ["lock"]
