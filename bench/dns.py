"""Benchmark of the embedded resolver (issue 15) beside aardvark-dns and dnsmasq, as root:

    .venv/bin/python bench/dns.py [--containers 1000] [--seconds 8]

In one sandboxed host (tests/sandbox.py), all three serve the same N names, one A record each:
ours after `apply` of N containers on one bridge network (dnsperf inside a container's namespace, at
127.0.0.11:53), aardvark-dns 1.4 from a per-network config file (listening on an address of the
sandbox's lo), dnsmasq from an --addn-hosts file. Each server is pinned to CPU 1 and dnsperf to CPU 0
(one core each, as the issue's figures were measured). Reported per server: queries per second at
saturation (dnsperf, 64 outstanding), p50/p99 latency at a fixed 5,000 queries/s (dnsperf -v), RSS,
and add-one to resolvable: the time from the start of the change (ours: an in-process apply of one
more container; theirs: a config line appended and SIGHUP) until the new name answers. Wall clock on a
shared machine: read the figures as upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

AARDVARK = "/usr/lib/podman/aardvark-dns"
AARDVARK_IP, DNSMASQ_IP = "10.89.0.1", "127.0.0.3"
SUBNET = "10.60.0.0/16"
RATE = 5000  # queries/s for the latency run: well under every server's saturation
ADD_ONE_REPS = 5
TIMEOUT = 30.0


def outer(args: argparse.Namespace) -> None:
    from sandbox import Host

    with Host() as host:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = host.run(
            [
                sys.executable,
                str(Path(__file__)),
                "--inner",
                str(host.workdir),
                "--containers",
                str(args.containers),
                "--seconds",
                str(args.seconds),
            ],
            check=False,
            timeout=3600,
            env=env,
        )
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-5000:])
    result = json.loads(proc.stdout.splitlines()[-1])
    print(table(result))
    print(json.dumps(result))


def table(result: dict[str, Any]) -> str:
    rows = [f"{result['containers']} names, dnsperf {result['seconds']} s per server, one core each"]
    rows.append(f"{'server':<14}{'qps':>10}{'p50 ms':>9}{'p99 ms':>9}{'RSS MB':>9}{'add-one ms':>12}")
    for name, r in result["servers"].items():
        rows.append(
            f"{name:<14}{r['qps']:>10.0f}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}{r['rss_mb']:>9.1f}"
            f"{r['add_one_ms']:>12.1f}"
        )
    rows.append(
        f"ours: in-process apply of one more container {result['apply_add_one_ms']:.1f} ms "
        f"(of which the resolver's records {result['records_ms']:.1f} ms: built, written, reloaded), "
        f"resolvable {result['after_apply_ms']:.2f} ms after it returned"
    )
    return "\n".join(rows)


def inner(workdir: Path, n: int, seconds: float) -> None:
    from reconciler.dns import supervise
    from reconciler.engine import state_dir_from
    from reconciler.session import Session
    from reconciler.spec import Spec

    # A private resolv.conf with no upstream: nothing is forwarded anywhere.
    (workdir / "resolv.conf").write_text("")
    run(["mount", "--bind", str(workdir / "resolv.conf"), "/etc/resolv.conf"])
    names = [f"c{i}" for i in range(n)]
    queries = workdir / "queries.txt"
    shuffled = names[:]
    random.Random(15).shuffle(shuffled)
    queries.write_text("".join(f"{name} A\n" for name in shuffled))
    spec = {
        "version": 1,
        "networks": {"net": {"subnet": SUBNET}},
        "containers": {c: {"networks": ["net"]} for c in names},
    }
    state_dir = state_dir_from(None)
    session = Session(state_dir)
    session.apply(Spec.model_validate(spec))
    status = supervise.status(state_dir.path)
    assert status is not None, "the resolver did not start"
    pid = int(status["pid"])
    servers: dict[str, Any] = {}
    netns = ["ip", "netns", "exec", names[0]]
    servers["ours"] = measure(pid, [*netns, "taskset", "-c", "0"], "127.0.0.11", queries, seconds)
    servers["ours"]["add_one_ms"], apply_ms, after_ms, records_ms = ours_add_one(session, spec)
    servers["aardvark-dns"] = aardvark(workdir, names, queries, seconds)
    servers["dnsmasq"] = dnsmasq(workdir, names, queries, seconds)
    print(
        json.dumps(
            {
                "containers": n,
                "seconds": seconds,
                "servers": servers,
                "apply_add_one_ms": apply_ms,
                "after_apply_ms": after_ms,
                "records_ms": records_ms,
            }
        )
    )


def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)


def measure(pid: int, client: list[str], server: str, queries: Path, seconds: float) -> dict[str, Any]:
    run(["taskset", "-a", "-p", "-c", "1", str(pid)])
    base = [*client, "dnsperf", "-s", server, "-d", str(queries), "-c", "1", "-T", "1"]
    out = run([*base, "-l", str(seconds), "-q", "64"], timeout=seconds + 60).stdout
    qps = float(next(line.split()[-1] for line in out.splitlines() if "Queries per second" in line))
    lost = next(line.split()[2] for line in out.splitlines() if "Queries lost" in line)
    out = run([*base, "-l", str(min(seconds, 4)), "-Q", str(RATE), "-v"], timeout=seconds + 60).stdout
    latencies = sorted(float(line.split()[-1]) for line in out.splitlines() if line.startswith("> NOERROR"))
    assert latencies, out[-2000:]
    return {
        "qps": qps,
        "lost": int(lost),
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "rss_mb": rss_mb(pid),
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def wait_resolvable(server: str, name: str, netns_path: str | None = None) -> float:
    """Seconds until `name` answers NOERROR with an address at `server` (from `netns_path`'s namespace)."""
    from reconciler.dns import wire

    sock = _socket(netns_path)
    sock.settimeout(0.05)
    query = wire.query(name, wire.A, ident=4242)
    start = time.monotonic()
    try:
        while time.monotonic() - start < TIMEOUT:
            sock.sendto(query, (server, 53))
            try:
                msg = wire.parse(sock.recv(4096))
            except TimeoutError:
                continue
            if msg.rcode == wire.NOERROR and msg.answers:
                return time.monotonic() - start
            time.sleep(0.0005)
    finally:
        sock.close()
    raise AssertionError(f"{name} did not resolve at {server} within {TIMEOUT:g} s")


def _socket(netns_path: str | None) -> socket.socket:
    if netns_path is None:
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    from reconciler.netns import _enter, _in_thread

    def make() -> socket.socket:
        _enter(netns_path)
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    return _in_thread(make)


def ours_add_one(session: Any, spec: dict[str, Any]) -> tuple[float, float, float, float]:
    """(change start -> resolvable, the apply alone, resolvable after the apply returned, the records'
    part of the apply: built, written, reloaded), ms, medians."""
    from reconciler.dns import hook
    from reconciler.spec import Spec

    # An add is a part (session.reach): its records are published by after_part.
    publishing = hook.after_part
    spent: list[float] = []

    def timed_after(*args: Any) -> None:
        start = time.monotonic()
        publishing(*args)
        spent.append(time.monotonic() - start)

    hook.after_part = timed_after  # type: ignore[assignment]
    totals, applies, afters = [], [], []
    try:
        for i in range(ADD_ONE_REPS):
            name = f"new{i}"
            spec["containers"][name] = {"networks": ["net"]}
            validated = Spec.model_validate(spec)  # the daemon has it parsed already: not timed
            start = time.monotonic()
            session.apply(validated)
            applied = time.monotonic()
            after = wait_resolvable("127.0.0.11", name, "/run/netns/c0")
            totals.append(applied - start + after)
            applies.append(applied - start)
            afters.append(after)
    finally:
        hook.after_part = publishing  # type: ignore[assignment]
    ms = [1000 * statistics.median(v) for v in (totals, applies, afters, spent)]
    return ms[0], ms[1], ms[2], ms[3]


def aardvark(workdir: Path, names: list[str], queries: Path, seconds: float) -> dict[str, Any]:
    config = workdir / "aardvark"
    config.mkdir()
    run(["ip", "addr", "add", f"{AARDVARK_IP}/32", "dev", "lo"])
    lines = [AARDVARK_IP] + [f"{i:064x} {address(i)}  {name}" for i, name in enumerate(names)]
    (config / "bench").write_text("\n".join(lines) + "\n")
    # `run` forks: the server is the child, found by its name (nothing else here is called that).
    run([AARDVARK, "--config", str(config), "-p", "53", "run"], timeout=TIMEOUT)
    pid = int(run(["pgrep", "-n", "-x", "aardvark-dns"]).stdout)
    try:
        wait_resolvable(AARDVARK_IP, names[-1])
        result = measure(pid, ["taskset", "-c", "0"], AARDVARK_IP, queries, seconds)
        result["add_one_ms"] = add_one(
            lambda name, i: _append(
                config / "bench", f"{len(names) + i:064x} {address(len(names) + i)}  {name}"
            ),
            pid,
            AARDVARK_IP,
        )
        return result
    finally:
        os.kill(pid, signal.SIGTERM)


def dnsmasq(workdir: Path, names: list[str], queries: Path, seconds: float) -> dict[str, Any]:
    hosts = workdir / "dnsmasq.hosts"
    hosts.write_text("".join(f"{address(i)} {name}\n" for i, name in enumerate(names)))
    proc = subprocess.Popen(
        [
            "dnsmasq",
            "-k",
            "-C",
            "/dev/null",
            "--no-resolv",
            "--no-hosts",
            f"--addn-hosts={hosts}",
            f"--listen-address={DNSMASQ_IP}",
            "--bind-interfaces",
            "-p",
            "53",
            "-u",
            "root",
            "--log-facility=-",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_resolvable(DNSMASQ_IP, names[-1])
        result = measure(proc.pid, ["taskset", "-c", "0"], DNSMASQ_IP, queries, seconds)
        result["add_one_ms"] = add_one(
            lambda name, i: _append(hosts, f"{address(len(names) + i)} {name}"), proc.pid, DNSMASQ_IP
        )
        return result
    finally:
        proc.terminate()
        proc.wait(10)


def add_one(write: Any, pid: int, server: str) -> float:
    """Median ms from the start of the change (a line written, SIGHUP) until the new name answers."""
    took = []
    for i in range(ADD_ONE_REPS):
        name = f"new{i}"
        start = time.monotonic()
        write(name, i)
        os.kill(pid, signal.SIGHUP)
        wait_resolvable(server, name)
        took.append(time.monotonic() - start)
    return 1000 * statistics.median(took)


def _append(path: Path, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


def address(i: int) -> str:
    return f"10.61.{i // 250}.{i % 250 + 2}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--containers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--inner", metavar="WORKDIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(Path(args.inner), args.containers, args.seconds)
    else:
        outer(args)


if __name__ == "__main__":
    main()
