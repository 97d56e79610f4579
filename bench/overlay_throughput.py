"""TCP throughput between two sandboxed hosts on a sandboxed switch, over a plain overlay (VXLAN) and
an encrypted one (VXLAN inside WireGuard: the kernel's, or wireguard-go where the kernel has none),
side by side in one run: iperf3 from a container on host-a to one on host-b. Needs root.

    .venv/bin/python bench/overlay_throughput.py [--seconds 5] [--reps 3] [--mtu 1500]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from sandbox import Cluster, Host, make_cluster

HOSTS = ("host-a", "host-b")
NETWORKS = {"plain": False, "secure": True}  # name -> encrypted
PRIVATE_DIRS = ("/run/wireguard", "/etc/netreconciler")
PORT = 5201


def spec(c: Cluster, keys: list[str]) -> dict[str, object]:
    return {
        "version": 1,
        "hosts": {
            n: {"address": a, "public_key": k} for n, a, k in zip(HOSTS, c.addresses, keys, strict=True)
        },
        "networks": {
            name: {"driver": "overlay", "subnet": f"10.{220 + i}.0.0/24", "encrypted": encrypted}
            for i, (name, encrypted) in enumerate(NETWORKS.items())
        },
        "containers": {
            **{f"client-{n}": {"host": "host-a", "networks": [n]} for n in NETWORKS},
            **{f"server-{n}": {"host": "host-b", "networks": [n]} for n in NETWORKS},
        },
    }


def prepare(c: Cluster) -> None:
    keys = []
    for host in c.hosts:
        proc = host.reconciler("keygen", check=True)
        keys.append(proc.stdout.strip())
    path = c.hosts[0].write_spec(spec(c, keys))
    assert c.hosts[0].reconciler("lock", str(path)).returncode == 0
    for name, host in zip(HOSTS, c.hosts, strict=True):
        proc = host.reconciler("apply", str(path), "--host", name)
        assert proc.returncode == 0, proc.stderr


def throughput(a: Host, b: Host, network: str, seconds: int) -> float:
    """Gbit/s received by the server, one TCP stream."""
    server = b.background(
        ["ip", "netns", "exec", f"server-{network}", "iperf3", "-s", "-1", "--forceflush", "-p", str(PORT)],
        log=b.workdir / f"iperf3-{network}.log",
    )
    deadline = time.monotonic() + 10
    while "listening" not in server.output():
        if time.monotonic() > deadline:
            raise RuntimeError(f"iperf3 server on {network} did not start: {server.output()}")
        time.sleep(0.05)
    argv = ["iperf3", "-c", f"server-{network}", "-p", str(PORT), "-t", str(seconds), "-J"]
    out = a.run(argv, netns=f"client-{network}", timeout=seconds + 60).stdout
    server.wait(timeout=30)
    bps: float = json.loads(out)["end"]["sum_received"]["bits_per_second"]
    return bps / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=5, help="per iperf3 run")
    p.add_argument("--reps", type=int, default=3, help="runs per network, alternating")
    p.add_argument("--mtu", type=int, default=1500, help="underlay MTU")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as work:
        c = make_cluster(len(HOSTS), Path(work), mtu=args.mtu, private_dirs=PRIVATE_DIRS)
        try:
            prepare(c)
            a, b = c.hosts
            links = {n: a.run(["ip", "-j", "link", "show", "eth0"], netns=f"client-{n}") for n in NETWORKS}
            mtus = {n: json.loads(proc.stdout)[0]["mtu"] for n, proc in links.items()}
            results: dict[str, list[float]] = {n: [] for n in NETWORKS}
            for _ in range(args.reps):
                for n in NETWORKS:
                    results[n].append(throughput(a, b, n, args.seconds))
        finally:
            c.close()
    print(f"underlay MTU {args.mtu}, one TCP stream, {args.seconds} s x {args.reps} runs (median, min-max)")
    for n, encrypted in NETWORKS.items():
        runs = results[n]
        what = "encrypted (VXLAN in WireGuard)" if encrypted else "plain (VXLAN)"
        print(
            f"  {what:32} container MTU {mtus[n]}: {statistics.median(runs):.2f} Gbit/s "
            f"({min(runs):.2f}-{max(runs):.2f})"
        )
    print(json.dumps({"mtu": args.mtu, "container_mtu": mtus, "gbit_per_s": results}))


if __name__ == "__main__":
    main()
