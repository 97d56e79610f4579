"""Run inside a sandbox by test_etcd_ipam.py: several hosts claim addresses from one etcd at once.

Reads a JSON plan on stdin: the endpoints, a scope, a small subnet, and per host its containers (with
an optional static address) and the pauses to take between its claims, so the hosts' transactions
interleave as the plan says. Every host is a thread with its own `Store` (its own lease and client);
all start together at a barrier. Prints JSON: what each host resolved (the addresses it would
program) and the problems the store raised, then the store's address keys as listed at the end.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

from reconciler.errors import HostConflict
from reconciler.spec import Spec
from reconciler.store.etcd import Store, StoreConflict
from reconciler.store.resolve import resolve


def host_spec(plan: dict[str, Any], containers: dict[str, str | None]) -> Spec:
    return Spec.model_validate(
        {
            "version": 1,
            "name": plan["scope"],
            "cluster": {"store": "etcd", "endpoints": plan["endpoints"]},
            "networks": {"race": {"driver": "overlay", "subnet": plan["subnet"]}},
            "containers": {
                c: {"networks": {"race": {"ipv4_address": a} if a else None}} for c, a in containers.items()
            },
        }
    )


def run_host(plan: dict[str, Any], host: str, barrier: threading.Barrier, out: dict[str, Any]) -> None:
    mine = plan["hosts"][host]
    store = Store(host_spec(plan, {}).cluster, plan["scope"], host, mine["vtep"])  # type: ignore[arg-type]
    store.relist()
    store.register()
    barrier.wait()
    wanted: dict[str, str | None] = {}
    problems: list[str] = []
    for (container, static), pause in zip(mine["containers"], mine["pauses"], strict=True):
        time.sleep(pause)
        wanted[container] = static
        try:
            store.claim(host_spec(plan, wanted), {})
        except StoreConflict as e:
            problems += [f"{'.'.join(map(str, p.path))}: {p.message}" for p in e.conflicts]
            wanted.pop(container)
        except HostConflict as e:
            problems.append(str(e))
            wanted.pop(container)
    resolved = resolve(host_spec(plan, wanted), store.relist(), host)
    out[host] = {"allocation": resolved.allocation["race"].containers, "problems": problems}


def main() -> None:
    plan = json.load(sys.stdin)
    barrier = threading.Barrier(len(plan["hosts"]))
    out: dict[str, Any] = {}
    threads = [threading.Thread(target=run_host, args=(plan, h, barrier, out)) for h in plan["hosts"]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    lister = Store(host_spec(plan, {}).cluster, plan["scope"], "lister", "0.0.0.0")  # type: ignore[arg-type]
    keys = {k: json.loads(e.value) for k, e in lister.relist().entries.items() if "/ipam/" in k}
    print(json.dumps({"hosts": out, "keys": keys}))


if __name__ == "__main__":
    main()
