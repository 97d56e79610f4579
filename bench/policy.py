"""Network policy at scale, in a sandbox (tests/sandbox.py); needs root.

    .venv/bin/python bench/policy.py [CONTAINERS] [POLICIES]

1. Apply time of POLICIES policies over CONTAINERS containers on one bridge: the containers first
   (without policies), then the policies added (elements only: one nft transaction), then one
   container added to one policy's `from` (a membership change), then a no-op apply.
   Policy i selects 4 of the first half of the containers and admits 10 of the second half, a
   /28 and two port entries (6379/tcp, 8000-8010/tcp).
   And the nft transaction alone (the table and every policy element, then a membership change's
   elements), timed in the sandbox without the observe and verification around it.
2. TCP connection rate (connect, one byte each way, close) from one client to a selected container
   (policy 0 admits the client) and to an unselected one, side by side, with the whole ruleset loaded.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from sandbox import Host

# Connections per second for SECONDS: each one connects, sends a byte, reads the reply and closes.
CLIENT = r"""
import socket, sys, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
n, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    with socket.create_connection((host, port), timeout=2) as s:
        s.sendall(b"x")
        s.recv(1)
    n += 1
print(n / seconds)
"""


# The table skeleton and the policy elements in one transaction, then a membership change: timed alone.
NFT_ONLY = r"""
import ipaddress, json, sys, time
from reconciler.firewall.decl import table_commands
from reconciler.firewall.layout import tables
from reconciler.nft import Nft
from reconciler.policy.nft import desired_policy
from reconciler.specload import load_spec

def elements(path):
    spec = load_spec(path)
    addrs = {c: [ctr.attachments()["net"].ipv4_address] for c, ctr in spec.containers.items()}
    return {(e.set, e.value_json) for e in desired_policy(spec, "nr_bench_only", addrs)}

decl = tables("bench_only")["inet"]
before, after = elements(sys.argv[1]), elements(sys.argv[2])
ref = {"family": "inet", "table": decl.name}
add = lambda op, s, v: {op: {"element": {**ref, "name": s, "elem": [json.loads(v)]}}}
nft = Nft()
start = time.monotonic()
nft.transaction(table_commands(decl) + [add("add", s, v) for s, v in sorted(before)])
full = time.monotonic() - start
start = time.monotonic()
changed = [add("add", s, v) for s, v in sorted(after - before)]
nft.transaction(changed + [add("delete", s, v) for s, v in sorted(before - after)])
delta = time.monotonic() - start
nft.transaction([{"delete": {"table": {"family": "inet", "name": decl.name}}}])
print(f"nft alone: table + {len(before)} elements {full:.3f} s;"
      f" membership change ({len(after ^ before)} elements) {delta * 1000:.1f} ms")
"""


def spec(containers: int, policies: int, extra: bool = False) -> dict[str, Any]:
    names = [f"c{i}" for i in range(containers)]
    half = containers // 2
    out: dict[str, Any] = {
        "version": 1,
        "name": "bench",
        "networks": {"net": {"subnet": "10.96.0.0/16"}},
        "containers": {n: {"networks": {"net": {"ipv4_address": _addr(i)}}} for i, n in enumerate(names)},
        "policies": {},
    }
    for p in range(policies):
        to = [names[(p * 4 + k) % half] for k in range(4)]
        sources = [names[half + (p * 10 + k) % (containers - half)] for k in range(10)]
        if extra and p == 0:
            sources.append(names[-1])
        out["policies"][f"p{p}"] = {
            "to": to,
            "from": [*sources, f"198.18.{p % 256}.0/28"],
            "ports": ["6379/tcp", "8000-8010/tcp"],
        }
    return out


def _addr(i: int) -> str:
    return f"10.96.{1 + i // 250}.{1 + i % 250}"


def timed(host: Host, label: str, data: dict[str, Any], name: str) -> None:
    path = host.write_spec(data, name)
    planned = json.loads(host.reconciler("apply", str(path), "--dry-run", "-o", "json", timeout=900).stdout)
    kinds: dict[str, int] = {}
    for a in planned["actions"]:
        kinds[a["kind"]] = kinds.get(a["kind"], 0) + 1
    start = time.monotonic()
    proc = host.reconciler("apply", str(path), "-q", timeout=900)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"{label}: {elapsed:.2f} s  ({len(planned['actions'])} actions: {kinds})", flush=True)


def rate(host: Host, client: str, target: str, seconds: float) -> float:
    out = host.run(
        ["ip", "netns", "exec", client, sys.executable, "-c", CLIENT, target, "6379", str(seconds)]
    )
    return float(out.stdout.strip())


def main(containers: int, policies: int) -> None:
    with tempfile.TemporaryDirectory() as work, Host(workdir=Path(work)) as host:
        bare = spec(containers, 0)
        timed(host, f"apply {containers} containers, no policy", bare, "bare.yaml")
        timed(host, f"add {policies} policies", spec(containers, policies), "policies.yaml")
        timed(
            host, "one container joins a policy's from", spec(containers, policies, extra=True), "more.yaml"
        )
        timed(host, "no-op apply", spec(containers, policies, extra=True), "more.yaml")
        print(host.run([sys.executable, "-c", NFT_ONLY, str(host.workdir / "policies.yaml"),
                        str(host.workdir / "more.yaml")]).stdout.strip())  # fmt: skip
        elements = host.run("nft -j list table inet netreconciler_bench").stdout
        count = sum(len(o["set"].get("elem", [])) for o in json.loads(elements)["nftables"] if "set" in o)
        print(f"policy elements in the kernel: {count}")

        chosen = {t for p in spec(containers, policies)["policies"].values() for t in p["to"]}
        client = f"c{containers // 2}"  # policy 0 admits it to c0
        free = next(i for i in range(containers) if f"c{i}" not in chosen and f"c{i}" != client)
        for i in (0, free):
            host.serve(f"c{i}", 6379, "x")
        print(f"TCP connections per second from {client} (3 s each, alternating, 7 rounds):")
        rates: list[tuple[float, float]] = []
        for _ in range(7):
            rates.append((rate(host, client, _addr(0), 3), rate(host, client, _addr(free), 3)))
            print(
                f"  selected c0: {rates[-1][0]:,.0f}/s   unselected c{free}: {rates[-1][1]:,.0f}/s",
                flush=True,
            )
        a, b = (statistics.median(r[i] for r in rates) for i in (0, 1))
        print(f"median: selected {a:,.0f}/s, unselected {b:,.0f}/s ({a / b:.2f}x)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000, int(sys.argv[2]) if len(sys.argv) > 2 else 100)
