"""Run inside the sandbox by bench/etcd_store.py: simulated hosts register endpoints through the store.

    etcd_sim.py register ENDPOINTS HOSTS PER_HOST   # HOSTS hosts, PER_HOST containers each, at once
    etcd_sim.py add ENDPOINTS NAME                  # one more host with one container NAME

Prints JSON: the seconds it took and, for `add`, the container's address.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from reconciler.spec import Spec
from reconciler.store.etcd import Store

SUBNET = "10.200.0.0/16"
TTL = 3600  # the simulated hosts keep no lease alive: they must outlive the benchmark


def spec(endpoints: list[str], containers: list[str]) -> Spec:
    return Spec.model_validate(
        {
            "version": 1,
            "name": "sim",
            "cluster": {"store": "etcd", "endpoints": endpoints, "ttl": TTL},
            "networks": {"pets": {"driver": "overlay", "subnet": SUBNET}},
            "containers": {c: {"networks": ["pets"]} for c in containers},
        }
    )


def register(endpoints: list[str], host: str, vtep: str, containers: list[str]) -> Store:
    s = spec(endpoints, containers)
    assert s.cluster is not None
    store = Store(s.cluster, "sim", host, vtep)
    store.relist()
    store.register()
    store.claim(s, {})
    return store


def main() -> None:
    command, endpoints = sys.argv[1], sys.argv[2].split(",")
    start = time.monotonic()
    if command == "register":
        hosts, per_host = int(sys.argv[3]), int(sys.argv[4])

        def one(h: int) -> None:
            vtep = f"198.18.{h // 250}.{h % 250 + 1}"
            register(endpoints, f"sim{h}", vtep, [f"s{h}c{i}" for i in range(per_host)])

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, range(hosts)))
        print(json.dumps({"seconds": time.monotonic() - start}))
        return
    name = sys.argv[3]
    store = register(endpoints, f"late-{name}", "198.18.99.1", [name])
    address = next(ep.address for ep in store.view.endpoints() if ep.name == name)
    print(json.dumps({"seconds": time.monotonic() - start, "address": address, "at": time.time()}))


if __name__ == "__main__":
    main()
