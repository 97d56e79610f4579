"""`python -m bench [--sizes 100,500,1000] [--reps 3] [--peers ...]`: every scenario, every peer, each
repetition in a fresh sandbox (tests/sandbox.py); prints medians side by side and writes JSON."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from sandbox import Host  # noqa: E402

PEERS = ["ours", "netavark", "cni-portmap", "cni-bridge", "shell", "floor"]
# Ours on the dual-stack workload (an IPv6 /64 per network too): `--dual-stack` runs it beside ours.
DUAL = "ours-dual"
NOOP = "ours-noop"  # `--noop`: the no-op alone
DUAL_SCENARIOS = ["cold", "noop", "add_one", "change_port", "destroy"]
# The peers that run one process per container: slow, so `--peer-reps` applies to them.
SLOW = ("netavark", "cni-portmap", "cni-bridge")
CLI_SCENARIOS = ["cold", "noop", "noop_dry", "add_one", "remove_one", "change_port", "destroy"]
INPROC = ["inproc_add_one", "inproc_remove_one", "inproc_change_port", "inproc_noop"]


def run(peer: str, n: int, timeout: float) -> dict[str, Any]:
    with Host() as host:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = host.run(
            [sys.executable, "-m", "bench.driver", peer, str(n), str(host.workdir)],
            check=False,
            timeout=timeout,
            env=env,
        )
    if proc.returncode != 0:
        return {"error": proc.stderr[-3000:]}
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return result


def median(runs: list[dict[str, Any]], scenario: str, key: str = "seconds") -> float | None:
    values = [r[scenario][key] for r in runs if scenario in r and key in r[scenario]]
    return statistics.median(values) if values else None


def proofs_ok(runs: list[dict[str, Any]]) -> bool:
    return bool(runs) and all(
        "error" not in r and all(v["ok"] for k, v in r.items() if k.endswith("_proof")) for r in runs
    )


def fmt(v: float | None, unit: str = "s") -> str:
    if v is None:
        return "-"
    if unit == "ms":
        return f"{v * 1000:.0f} ms"
    return f"{v:.2f} s" if v >= 0.1 else f"{v * 1000:.0f} ms"


def startup(runs: list[dict[str, Any]], what: str) -> tuple[float, float | None]:
    def get(r: dict[str, Any], key: str) -> float | None:
        v = r[what]
        return v if isinstance(v, float) and key == "seconds" else v.get(key) if isinstance(v, dict) else None

    walls = [w for r in runs if (w := get(r, "seconds")) is not None]
    cpus = [c for r in runs if (c := get(r, "cpu")) is not None]
    return statistics.median(walls), statistics.median(cpus) if cpus else None


def cell(rs: list[dict[str, Any]], scenario: str, unit: str) -> str:
    netlink, nft = median(rs, scenario, "netlink") or 0, median(rs, scenario, "nft") or 0
    wall, cpu = median(rs, scenario), median(rs, scenario, "cpu")
    return f"{both(wall, cpu, unit)} / {netlink:.0f} / {nft:.0f}"


def handed(rs: list[dict[str, Any]], scenario: str) -> str:
    wall, cpu, daemon = (median(rs, scenario, k) for k in ("seconds", "cpu", "daemon_cpu"))
    if wall is None:
        return "-"
    return f"{fmt(wall, 'ms')} ({fmt(cpu, 'ms')}, {fmt(daemon, 'ms')})"


def handed_cpu(rs: list[dict[str, Any]], scenario: str) -> float | None:
    """A handed-over apply's CPU time: the CLI's and the daemon's, per run, then the median."""
    values = [r[scenario]["cpu"] + r[scenario]["daemon_cpu"] for r in rs if scenario in r]
    return statistics.median(values) if values else None


def both(wall: float | None, cpu: float | None, unit: str = "s") -> str:
    """Wall time, and CPU time in parentheses: the steadier figure on a loaded machine."""
    return fmt(wall, unit) + (f" ({fmt(cpu, unit)})" if cpu is not None else "")


def ratios(wall: dict[str, float | None], cpu: dict[str, float | None], a: str, b: str) -> str:
    return ratio(wall[a], wall[b]) + (f" ({ratio(cpu[a], cpu[b])})" if cpu[a] and cpu[b] else "")


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.1f}x" if a and b else "-"


def report(results: dict[str, Any], sizes: list[int]) -> str:
    out = []
    runs = results["runs"]

    def get(peer: str, n: int) -> list[dict[str, Any]]:
        return [r for r in runs.get(f"{peer}/{n}", []) if "error" not in r]

    out.append("Cold apply: median wall time (CPU time); every run followed by an untimed proof")
    head = ["N", *PEERS, "netavark/ours", "cni-portmap/ours", "cni-bridge/ours", "ours/floor"]
    out.append(" | ".join(head))
    for n in sizes:
        cold = {p: median(get(p, n), "cold") for p in PEERS}
        ok = {p: proofs_ok(runs.get(f"{p}/{n}", [])) for p in PEERS}
        cpu = {p: median(get(p, n), "cold", "cpu") for p in PEERS}
        cells = [
            both(cold[p], cpu[p]) + ("" if ok[p] or cold[p] is None else " (PROOF FAILED)") for p in PEERS
        ]
        out.append(
            " | ".join(
                [
                    str(n),
                    *cells,
                    ratios(cold, cpu, "netavark", "ours"),
                    ratios(cold, cpu, "cni-portmap", "ours"),
                    ratios(cold, cpu, "cni-bridge", "ours"),
                    ratios(cold, cpu, "ours", "floor"),
                ]
            )
        )
    out.append("")
    out.append("Destroy (until the kernel finished tearing the veths down)")
    out.append(" | ".join(["N", *PEERS, "netavark/ours", "cni-portmap/ours", "cni-bridge/ours"]))
    for n in sizes:
        d = {p: median(get(p, n), "destroy") for p in PEERS}
        dc = {p: median(get(p, n), "destroy", "cpu") for p in PEERS}
        out.append(
            " | ".join(
                [
                    str(n),
                    *(both(d[p], dc[p]) for p in PEERS),
                    ratios(d, dc, "netavark", "ours"),
                    ratios(d, dc, "cni-portmap", "ours"),
                    ratios(d, dc, "cni-bridge", "ours"),
                ]
            )
        )
    out.append("")
    out.append("Add one container to N: our CLI apply (no-op beside it) against one netavark setup")
    out.append(" | ".join(["N", "ours add_one", "ours noop", "netavark add_one", "ours/netavark"]))
    for n in sizes:
        a = {p: median(get(p, n), "add_one") for p in ("ours", "netavark")}
        ac = {p: median(get(p, n), "add_one", "cpu") for p in ("ours", "netavark")}
        noop = both(median(get("ours", n), "noop"), median(get("ours", n), "noop", "cpu"))
        proven = proofs_ok(runs.get(f"netavark/{n}", [])) or a["netavark"] is None
        cells = [
            both(a["ours"], ac["ours"]),
            noop,
            both(a["netavark"], ac["netavark"]) + ("" if proven else " (PROOF FAILED)"),
        ]
        out.append(" | ".join([str(n), *cells, ratios(a, ac, "ours", "netavark")]))
    out.append("")
    out.append(
        "Add one container through the CLI with `reconciler watch` running (the spec handed to the daemon), "
        "against one netavark setup; wall (CLI CPU, daemon CPU); bare: the client started without `site`; "
        "ours/netavark: wall (CPU: the CLI's and the daemon's against netavark's)"
    )
    head = ["N", "ours add_one", "bare", "ours noop", "bare", "ours first apply of the spec"]
    head += ["ours noop (no daemon)", "netavark", "ours/netavark", "bare/netavark"]
    out.append(" | ".join(head))
    for n in sizes:
        rs, nv = get("ours", n), get("netavark", n)
        scenarios = ("add_one", "add_one_bare", "noop", "noop_bare", "first")
        cells = [handed(rs, f"handoff_{s}") for s in scenarios]
        cells.append(both(median(rs, "noop"), median(rs, "noop", "cpu")))
        cells.append(both(median(nv, "add_one"), median(nv, "add_one", "cpu"), "ms"))
        wall = {"ours": median(rs, "handoff_add_one"), "netavark": median(nv, "add_one")}
        cpu = {"ours": handed_cpu(rs, "handoff_add_one"), "netavark": median(nv, "add_one", "cpu")}
        bare = ratio(median(rs, "handoff_add_one_bare"), wall["netavark"])
        out.append(" | ".join([str(n), *cells, ratios(wall, cpu, "ours", "netavark"), bare]))
    out.append("")
    out.append("Ours through the CLI: wall (CPU) / netlink requests / nft transactions; peak RSS")
    out.append(" | ".join(["N", *CLI_SCENARIOS, "peak RSS"]))
    for n in sizes:
        rs = get("ours", n)
        cells = []
        for s in CLI_SCENARIOS:
            cells.append(cell(rs, s, "s") if rs else "-")
        rss = max((r[s]["rss_mb"] for r in rs for s in CLI_SCENARIOS if s in r), default=None)
        out.append(" | ".join([str(n), *cells, f"{rss:.0f} MB" if rss else "-"]))
    out.append("")
    out.append(
        "Ours in-process (Session.apply; state observed once, one untimed round, then the median of 5):"
        " wall (CPU) / netlink / nft"
    )
    out.append(" | ".join(["N", *INPROC]))
    for n in sizes:
        rs = get("ours", n)
        out.append(
            " | ".join(
                [
                    str(n),
                    *(cell(rs, s, "ms") for s in INPROC),
                ]
            )
        )
    if any(k.startswith(f"{DUAL}/") for k in runs):
        out.append("")
        out.extend(dual_stack_report(get, sizes))
    st = [r for r in results.get("startup", []) if "error" not in r]
    if st:
        version, validate = startup(st, "version"), startup(st, "validate")
        out.append("")
        out.append(
            f"CLI start-up: --version {both(*version, 'ms')}, validate (small spec) {both(*validate, 'ms')}"
        )
    if results.get("watch"):
        out.append("")
        out.append("The daemon's own paths (bench/watch_latency.py)")
    for name, value, target in results.get("watch", []):
        out.append(f"{name}: {value}" + (f" (target {target})" if target != "-" else ""))
    failed = [k for k, rs in runs.items() if not proofs_ok(rs)]
    if failed:
        out.append("")
        out.append("FAILED (error or proof): " + ", ".join(failed))
        for k in failed:
            for r in rs_of(runs, k):
                if "error" in r:
                    out.append(f"  {k}: {r['error'][-400:]}")
    return "\n".join(out)


def dual_stack_report(get: Any, sizes: list[int]) -> list[str]:
    """Ours on the dual-stack workload against ours on the IPv4-only one, per scenario: the cost of IPv6
    (two decimals: the target is within 1.3x)."""
    out = ["Dual-stack against IPv4-only (ours, CLI): wall (CPU) dual / IPv4-only = wall ratio (CPU ratio)"]
    out.append(" | ".join(["N", *DUAL_SCENARIOS]))
    for n in sizes:
        cells = []
        for s in DUAL_SCENARIOS:
            wall = {p: median(get(p, n), s) for p in (DUAL, "ours")}
            cpu = {p: median(get(p, n), s, "cpu") for p in (DUAL, "ours")}
            times = f"{both(wall[DUAL], cpu[DUAL])} / {both(wall['ours'], cpu['ours'])}"
            cells.append(f"{times} = {ratio2(wall[DUAL], wall['ours'])} ({ratio2(cpu[DUAL], cpu['ours'])})")
        out.append(" | ".join([str(n), *cells]))
    return out


def noop_report(results: dict[str, Any], sizes: list[int], baseline: str | None) -> str:
    scenarios = ["noop", "noop_compiled", "noop_dry"] + (["noop_baseline"] if baseline else [])
    out = [
        "Our no-op without a daemon (CLI, no daemon running): median wall (CPU) / netlink requests / nft"
        + (f"; baseline: revision {baseline} on the same hosts" if baseline else ""),
        " | ".join(["N", *scenarios, "baseline/noop (CPU)" if baseline else ""]).rstrip(" |"),
    ]
    for n in sizes:
        rs = [r for r in results["runs"].get(f"{NOOP}/{n}", []) if "error" not in r]
        cells = [cell(rs, s, "s") for s in scenarios]
        if baseline:
            wall = {s: median(rs, s) for s in ("noop", "noop_baseline")}
            cpu = {s: median(rs, s, "cpu") for s in ("noop", "noop_baseline")}
            cells.append(ratios(wall, cpu, "noop_baseline", "noop"))
        out.append(" | ".join([str(n), *cells]))
    failed = [k for k, rs in results["runs"].items() if not proofs_ok(rs)]
    if failed:
        out.append("FAILED (error or proof): " + ", ".join(failed))
    return "\n".join(out)


def checkout(rev: str) -> str:
    """This repository's package and bench at `rev`, in a directory of its own, byte-compiled as
    run.sh compiles ours (never a .pyc written into another checkout)."""
    import subprocess
    import tempfile

    where = tempfile.mkdtemp(prefix=f"bench-{rev}-")
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "reconciler", "bench"], check=True, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", where], input=archive.stdout, check=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", f"{where}/reconciler"], check=True)
    return where


def ratio2(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def watch_rows(count: int, edits: int) -> list[tuple[str, str, str]]:
    """bench/watch_latency.py's latency phase: the daemon's own edit and drift paths."""
    sys.path.insert(0, str(REPO / "bench"))
    from watch_latency import phase_latency

    rows: list[tuple[str, str, str]] = []
    phase_latency(count, edits, rows)
    return rows


def merged_report(parts: list[dict[str, Any]]) -> str:
    runs: dict[str, list[dict[str, Any]]] = {}
    for part in parts:
        for key, rs in part["runs"].items():
            runs.setdefault(key, []).extend(rs)
    sizes = sorted({int(k.split("/")[1]) for k in runs})
    startup = [r for part in parts for r in part.get("startup", [])]
    return report({"runs": runs, "startup": startup}, sizes)


def rs_of(runs: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return list(runs.get(key, []))


def _order(
    peers: list[str], reps: int, peer_reps: int | None, interleaved: bool
) -> list[tuple[str, int, int]]:
    """(peer, repetition, its repetitions) in the order they run: each peer's in a row, or with
    `interleaved` (--dual-stack) one repetition of every peer after the other, so that a change of
    the machine's load falls on the peers compared alike."""
    count = {p: peer_reps if peer_reps and p in SLOW else reps for p in peers}
    runs = [(p, rep, count[p]) for p in peers for rep in range(count[p])]
    return sorted(runs, key=lambda r: r[1]) if interleaved else runs


def main() -> None:
    p = argparse.ArgumentParser(prog="bench", description=__doc__)
    p.add_argument("--sizes", default="100,500,1000")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--peers", default=",".join(PEERS), help="comma-separated subset of " + ",".join(PEERS))
    p.add_argument(
        "--peer-reps", type=int, default=None, help="repetitions for netavark and the CNI peers (slow)"
    )
    p.add_argument(
        "--dual-stack",
        action="store_true",
        help=f"also run {DUAL}: ours on the dual-stack workload, beside ours",
    )
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument(
        "--watch",
        type=int,
        default=0,
        metavar="N",
        help="also the daemon's edit -> converged and drift -> repaired latency with N containers",
    )
    p.add_argument("--edits", type=int, default=10, help="spec edits for --watch")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a small run (CI): ours and netavark at N=100, once, and --watch 100 with 5 edits",
    )
    p.add_argument(
        "--noop",
        action="store_true",
        help=f"only our no-op without a daemon ({NOOP}): cached, compiled, dry run; quick",
    )
    p.add_argument(
        "--baseline",
        metavar="REV",
        help="with --noop: also run this git revision's no-op on the same hosts (before/after in one run)",
    )
    p.add_argument("--out", default=None, help="JSON file (default bench/results/TIMESTAMP.json)")
    p.add_argument(
        "--report", nargs="+", metavar="JSON", help="print the table of earlier runs (merged), run nothing"
    )
    args = p.parse_args()
    if args.report:
        print(merged_report([json.loads(Path(f).read_text()) for f in args.report]))
        return
    if args.quick:
        args.sizes, args.reps, args.peers, args.watch, args.edits = "100", 1, "ours,netavark", 100, 5
    sizes = [int(s) for s in args.sizes.split(",")]
    peers = [NOOP] if args.noop else args.peers.split(",")
    if args.baseline:
        os.environ["BENCH_BASELINE"] = checkout(args.baseline)
    if args.dual_stack:
        peers += [p for p in ("ours", DUAL) if p not in peers]
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out = Path(args.out or REPO / "bench" / "results" / f"{stamp}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "started": stamp,
        "sizes": sizes,
        "reps": args.reps,
        "cores": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "runs": {},
        "startup": [],
    }
    for _ in range(0 if args.noop else args.reps):
        results["startup"].append(run("startup", 0, args.timeout))
    for n in sizes:
        for peer, rep, reps in _order(peers, args.reps, args.peer_reps, args.dual_stack):
            t0 = time.time()
            r = run(peer, n, args.timeout)
            results["runs"].setdefault(f"{peer}/{n}", []).append(r)
            status = "error" if "error" in r else "ok"
            print(
                f"  {peer:12} N={n:<5} rep {rep + 1}/{reps}: {status} ({time.time() - t0:.0f} s)",
                flush=True,
            )
            out.write_text(json.dumps(results, indent=1))
    if args.watch:
        results["watch"] = watch_rows(args.watch, args.edits)
    results["loadavg_end"] = os.getloadavg()
    results["table"] = noop_report(results, sizes, args.baseline) if args.noop else report(results, sizes)
    out.write_text(json.dumps(results, indent=1))
    print()
    print(results["table"])
    print(f"\n(loadavg {results['loadavg_start'][0]:.1f} -> {results['loadavg_end'][0]:.1f}; JSON: {out})")


if __name__ == "__main__":
    main()
