"""Drift right after the daemon's own apply -> repaired (issue 12), in a sandboxed host, as root.

    .venv/bin/python bench/drift_repair.py [--edits 50] [--starts 10] [--during 5]

Runs tests/integration/drift_loop.py inside a sandbox: --edits spec edits to one daemon, each followed
within milliseconds of its applied reconcile's log line by a hand change of one of five kinds (host
veth deleted, `nft flush ruleset`, web's address flushed, its default route deleted, its hosts file
edited), then --starts fresh daemon starts with a drift right after the first apply, then --during
starts with the veth deleted and the ruleset flushed as soon as web's veth exists. Prints the
misses (not repaired within 10 s; the resync is an hour away) and the drift -> repaired latency per
kind, polled from the kernel every 10 ms (so the figures include process start-up of the checks).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from sandbox import Host  # noqa: E402

DRIVER = REPO / "tests" / "integration" / "drift_loop.py"


def run(mode: str, count: int) -> list[dict[str, Any]]:
    with Host() as host:
        proc = host.run([sys.executable, str(DRIVER), mode, str(host.workdir), str(count)], timeout=1800)
        results: list[dict[str, Any]] = json.loads(proc.stdout)
        return results


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(title: str, results: list[dict[str, Any]]) -> None:
    missed = [r for r in results if r["repair_ms"] is None]
    print(f"\n{title}: {len(missed)} of {len(results)} missed")
    after = [r["after_apply_ms"] for r in results if r["after_apply_ms"] is not None]
    if after:
        print(f"  drift made after the apply's log line: max {max(after):.0f} ms")
    for kind in sorted({r["kind"] for r in results}):
        times = [r["repair_ms"] for r in results if r["kind"] == kind and r["repair_ms"] is not None]
        if times:
            print(
                f"  {kind:<8} n={len(times):<3} p50 {pct(times, 0.5):.0f} ms, p95 {pct(times, 0.95):.0f} ms,"
                f" max {max(times):.0f} ms"
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--edits", type=int, default=50)
    p.add_argument("--starts", type=int, default=10)
    p.add_argument("--during", type=int, default=5)
    args = p.parse_args()
    if args.edits:
        report(f"{args.edits} spec edits, each followed by a drift", run("edits", args.edits))
    if args.starts:
        report(f"{args.starts} fresh starts, a drift right after the first apply", run("starts", args.starts))
    if args.during:
        title = f"{args.during} fresh starts, a drift in the middle of the first apply"
        report(title, run("during", args.during))
    print(f"\nloadavg at the end: {Path('/proc/loadavg').read_text().split()[:3]} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
