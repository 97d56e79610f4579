"""Runs one peer's scenarios at one size INSIDE a sandbox and prints their figures as JSON.

`python -m bench.driver PEER N WORKDIR`; the orchestrator (bench/__main__.py) starts it with
tests/sandbox.py's Host, so everything here happens in a throwaway network namespace.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from . import floor
from .netavark import Netavark
from .workload import (
    CONTAINER_PORT,
    NETWORKS,
    Container,
    containers,
    gateway,
    proof,
    published,
    published6,
    spec,
    subnet,
)

REPO = Path(__file__).resolve().parent.parent
CNI_PATH = "/usr/lib/cni"
# host-local's allocations, in a directory private to the sandbox (tests/sandbox.py mounts a tmpfs there).
CNI_IPAM = "/var/lib/reconciler/cni-ipam"


def timed(
    argv: list[str], *, env: dict[str, str] | None = None, stdin: str | None = None, cwd: str | None = None
) -> dict[str, Any]:
    """Run a command; its wall time, peak RSS (from wait4, this child only), exit code and output."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=err, env=env, cwd=cwd)
        if stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin.encode())
        assert proc.stdin is not None
        proc.stdin.close()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        result = {
            "seconds": seconds,
            "cpu": usage.ru_utime + usage.ru_stime,
            "rss_mb": usage.ru_maxrss / 1024,
            "rc": proc.returncode,
            "stdout": out.read().decode(errors="replace"),
            "stderr": err.read().decode(errors="replace"),
        }
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:4]} exited {proc.returncode}: {result['stderr'][-2000:]}")
    return result


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def clock(fn: Callable[[], object]) -> dict[str, float]:
    """Wall time, and CPU time (user + system, this process and the commands it ran): on a loaded
    machine the CPU time is the steadier figure."""
    t0, c0 = time.perf_counter(), _cpu()
    fn()
    return {"seconds": time.perf_counter() - t0, "cpu": _cpu() - c0}


def wait_veths_gone(timeout: float = 120) -> float:
    """Seconds until the kernel has finished tearing down every bridge port (namespace cleanup is
    asynchronous): destroy figures include it, for every peer."""
    t0 = time.perf_counter()
    while any(os.path.exists(f"/sys/class/net/{x}/brport") for x in os.listdir("/sys/class/net")):
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError("bridge ports still exist after destroy")
        time.sleep(0.01)
    return time.perf_counter() - t0


# --- us: the reconciler, through its CLI and in-process ---


def _reconciler(workdir: Path, *args: str, code: str | None = None) -> dict[str, Any]:
    """`code`: a checkout whose reconciler (and bench.counted) runs instead of this one."""
    stats = workdir / "stats.json"
    env = dict(os.environ, BENCH_STATS=str(stats))
    if code is not None:
        env["PYTHONPATH"] = code
    # `-m` puts the working directory first on the path: the checkout's own, for `code`.
    r = timed([sys.executable, "-m", "bench.counted", *args], env=env, cwd=code)
    r.update(json.loads(stats.read_text()))
    r.pop("stdout")
    r.pop("stderr")
    return r


def run_ours(n: int, workdir: Path, dual: bool = False) -> dict[str, Any]:
    """`dual`: the dual-stack workload, its ports also proven over IPv6."""

    def write(name: str, body: dict[str, Any]) -> str:
        path = workdir / name
        path.write_text(yaml.safe_dump(body, sort_keys=False))
        return str(path)

    base = write("base.yaml", spec(n, dual=dual))
    plus = write("plus.yaml", spec(n, extra=1, dual=dual))
    moved = write("moved.yaml", spec(n, port_of={0: 30000}, dual=dual))
    out: dict[str, Any] = {}
    out["cold"] = _reconciler(workdir, "apply", base)
    out["cold_proof"] = proof(n, published, dual=dual)
    if dual:
        out["cold6_proof"] = proof(n, published6, dual=True)
    out["noop"] = _reconciler(workdir, "apply", base)
    out["add_one"] = _reconciler(workdir, "apply", plus)
    out["add_one_proof"] = proof(n + 1, published)
    out["remove_one"] = _reconciler(workdir, "apply", base)
    out["change_port"] = _reconciler(workdir, "apply", moved)
    out["change_port_proof"] = proof(n, lambda c: (gateway(c.net), 30000 if c.index == 0 else c.host_port))
    out["noop_dry"] = _reconciler(workdir, "apply", base, "--dry-run")
    out.update(_handed_over(n, workdir, base, plus))
    out.update(_in_process(n, base, plus, moved))
    out["inproc_proof"] = proof(n, published)
    out["destroy"] = _reconciler(workdir, "destroy", base)
    out["destroy"]["settle"] = wait_veths_gone()
    out["destroy"]["seconds"] += out["destroy"]["settle"]
    return out


NOOP_ROUNDS = 5


def run_noop(n: int, workdir: Path) -> dict[str, Any]:
    """The no-op without a daemon, alone (`--noop`): with the compiled spec the apply kept
    (speccache.py), with that cache cleared first (the spec loaded and compiled), as a dry run, and,
    with $BENCH_BASELINE (a checkout of another revision), that revision's no-op on the same host
    (after an untimed one of its own, so that a cache it has is timed on a hit).
    After an untimed no-op (the DNS resolver the cold apply started has settled), NOOP_ROUNDS rounds
    of them all in turn, so a change of the machine's load falls on each alike; each figure is the
    median of its rounds."""
    base = workdir / "base.yaml"
    base.write_text(yaml.safe_dump(spec(n), sort_keys=False))
    out: dict[str, Any] = {"cold": _reconciler(workdir, "apply", str(base))}
    out["cold_proof"] = proof(n, published)
    _reconciler(workdir, "apply", str(base))
    baseline = os.environ.get("BENCH_BASELINE")
    rounds: dict[str, list[dict[str, Any]]] = {}
    for _ in range(NOOP_ROUNDS):
        rounds.setdefault("noop", []).append(_reconciler(workdir, "apply", str(base)))
        rounds.setdefault("noop_dry", []).append(_reconciler(workdir, "apply", str(base), "--dry-run"))
        if baseline:
            # Untimed first: ours' entry is of other code, a miss for a baseline that has the
            # compiled-spec cache too, which is then timed on its own hit as ours is.
            _reconciler(workdir, "apply", str(base), code=baseline)
            rounds.setdefault("noop_baseline", []).append(
                _reconciler(workdir, "apply", str(base), code=baseline)
            )
        subprocess.run(["rm", "-rf", "/var/lib/reconciler/cache"], check=True)
        rounds.setdefault("noop_compiled", []).append(_reconciler(workdir, "apply", str(base)))
    for scenario, runs in rounds.items():
        out[scenario] = {
            k: statistics.median(r[k] for r in runs) for k in ("seconds", "cpu", "netlink", "nft")
        }
    return out


DAEMON_START = 600.0
# How the hand-over client is started: the console script (bin/reconciler, as users run it), and
# without `site` at all (what the venv's start adds: its .pth files).
CONSOLE = [str(Path(sys.executable).with_name("reconciler"))]
BARE = [sys.executable, "-S", "-c", "import sys; from reconciler.entry import main; sys.exit(main())"]


def _handed_over(n: int, workdir: Path, base: str, plus: str) -> dict[str, Any]:
    """`reconciler apply` with a `reconciler watch` running on the state directory: the CLI hands the
    spec to the daemon (client.py). The daemon follows base.yaml; each apply is timed from the CLI's
    start to its exit (the console script, or BARE for `_bare`; not bench.counted, which imports
    the netlink and nft modules the thin client never loads). `daemon_cpu`: the daemon's CPU time
    for it."""
    from reconciler.client import socket_path, state_dir_of

    sock = Path(socket_path(state_dir_of(None)))
    log = open(workdir / "watch.log", "wb")  # noqa: SIM115
    daemon = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "watch", base, "--resync-interval", "3600"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_daemon(daemon, sock, workdir / "watch.log")
        out: dict[str, Any] = {}
        # The first hand-over of base.yaml parses it; the no-op after it finds the parse kept.
        scenarios = (
            ("handoff_first", CONSOLE, base),
            ("handoff_noop", CONSOLE, base),
            ("handoff_add_one", CONSOLE, plus),
            ("handoff_remove_one", CONSOLE, base),
            ("handoff_noop_bare", BARE, base),
            ("handoff_add_one_bare", BARE, plus),
            ("handoff_remove_one_bare", BARE, base),
        )
        env = dict(os.environ, PYTHONPATH=str(REPO))
        for label, client, path in scenarios:
            cpu0, handed = _process_cpu(daemon.pid), _handed(workdir / "watch.log")
            r = timed([*client, "apply", path], env=env)
            if _handed(workdir / "watch.log") != handed + 1:
                raise RuntimeError(f"{label}: the apply was not handed to the daemon")
            out[label] = {k: r[k] for k in ("seconds", "cpu", "rss_mb")}
            out[label]["daemon_cpu"] = _process_cpu(daemon.pid) - cpu0
            if label.startswith("handoff_add_one"):
                out[f"{label}_proof"] = proof(n + 1, published)
        out["handoff_daemon_rss_mb"] = _rss_mb(daemon.pid)
        return out
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
        log.close()


def _wait_for_daemon(daemon: subprocess.Popen[bytes], sock: Path, log: Path) -> None:
    deadline = time.monotonic() + DAEMON_START
    while not (sock.exists() and "reconcile" in log.read_text()):
        if daemon.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the daemon did not start: {log.read_text()[-2000:]}")
        time.sleep(0.05)


def _handed(log: Path) -> int:
    """How many applies the daemon says it was handed (and did not leave to the client)."""
    lines = log.read_text().splitlines()
    return sum(1 for line in lines if "handed over: apply" in line and "left to the client" not in line)


def _process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


IN_PROCESS_ROUNDS = 5


def _in_process(n: int, base: str, plus: str, moved: str) -> dict[str, Any]:
    """The daemon's path: specs loaded, state observed once, one untimed round of the changes (what a
    daemon's first changes import and build once), then IN_PROCESS_ROUNDS timed rounds: medians."""
    from reconciler.engine import state_dir_from
    from reconciler.nft import Nft
    from reconciler.rtnl import Stats
    from reconciler.session import Session
    from reconciler.specload import load_spec

    specs = {name: load_spec(path) for name, path in (("base", base), ("plus", plus), ("moved", moved))}
    session = Session(state_dir_from(None))
    session.apply(specs["base"])  # observes; in sync
    changes = (
        ("inproc_add_one", "plus"),
        ("inproc_remove_one", "base"),
        ("inproc_change_port", "moved"),
        ("inproc_noop", "moved"),
        ("inproc_change_back", "base"),
    )
    for _, name in changes:
        session.apply(specs[name])
    rounds: dict[str, list[dict[str, float]]] = {label: [] for label, _ in changes}
    for _ in range(IN_PROCESS_ROUNDS):
        for label, name in changes:
            requests, transactions = Stats.requests, Nft.transactions
            rounds[label].append(
                {
                    **clock(lambda name=name: session.apply(specs[name])),
                    "netlink": Stats.requests - requests,
                    "nft": Nft.transactions - transactions,
                }
            )
    return {label: _medians(runs) for label, runs in rounds.items()}


def _medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def run_startup(workdir: Path) -> dict[str, Any]:
    small = workdir / "small.yaml"
    small.write_text(yaml.safe_dump(spec(2), sort_keys=False))
    reconciler = [sys.executable, "-m", "reconciler"]
    runs = {
        "version": timed([*reconciler, "--version"]),
        "validate": timed([*reconciler, "validate", str(small)]),
    }
    return {
        name: {"seconds": r["seconds"], "cpu": r["cpu"], "rss_mb": r["rss_mb"]} for name, r in runs.items()
    }


# --- (a) the CNI reference plugins, invoked as a runtime invokes them ---


def _cni_conf(net: int, portmap: bool) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": f"net{net}",
        "type": "bridge",
        "bridge": f"cni{net}",
        "isGateway": True,
        "ipMasq": portmap,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": subnet(net), "gateway": gateway(net)}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": CNI_IPAM,
        },
    }


def _portmap_conf(c: Container, prev: dict[str, Any] | None) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "name": f"net{c.net}",
        "type": "portmap",
        "capabilities": {"portMappings": True},
        "snat": True,
        "runtimeConfig": {
            "portMappings": [{"hostPort": c.host_port, "containerPort": CONTAINER_PORT, "protocol": "tcp"}]
        },
    }
    if prev is not None:
        conf["prevResult"] = prev
    return conf


def _cni(command: str, c: Container, conf: dict[str, Any]) -> dict[str, Any]:
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": c.name,
        "CNI_NETNS": c.netns,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": CNI_PATH,
        "PATH": os.environ["PATH"],
        # iptables' lock file, which defaults to the machine's /run, in the sandbox's private state dir.
        "XTABLES_LOCKFILE": f"{CNI_IPAM}.xtables.lock",
    }
    proc = subprocess.run(
        [f"{CNI_PATH}/{conf['type']}"], input=json.dumps(conf), capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"CNI {conf['type']} {command} {c.name}: {proc.stdout} {proc.stderr}")
    return json.loads(proc.stdout) if proc.stdout.strip() else {}


def _netns_batch(verb: str, n: int, first: int = 0) -> None:
    """What a runtime does before ADD / after DEL; one `ip -batch` process for all, the same for every
    shell-based peer."""
    lines = "".join(f"netns {verb} {c.name}\n" for c in containers(n)[first:])
    subprocess.run(["ip", "-batch", "-"], input=lines, text=True, check=True)


def run_cni(n: int, portmap: bool) -> dict[str, Any]:
    cs = containers(n)

    def add() -> None:
        _netns_batch("add", n)
        for c in cs:
            result = _cni("ADD", c, _cni_conf(c.net, portmap))
            if portmap:
                _cni("ADD", c, _portmap_conf(c, result))

    def delete() -> None:
        for c in cs:
            if portmap:
                _cni("DEL", c, _portmap_conf(c, None))
            _cni("DEL", c, _cni_conf(c.net, portmap))
        _netns_batch("delete", n)

    out: dict[str, Any] = {"cold": clock(add)}
    if portmap:
        out["cold_proof"] = proof(n, published)
    else:
        addresses = _cni_addresses(cs)
        out["cold_proof"] = proof(n, lambda c: (addresses[c.name], CONTAINER_PORT))
    out["destroy"] = clock(delete)
    out["destroy"]["settle"] = wait_veths_gone()
    out["destroy"]["seconds"] += out["destroy"]["settle"]
    return out


def _cni_addresses(cs: list[Container]) -> dict[str, str]:
    """host-local's allocations, from its data dir (untimed, for the proof)."""
    out = {}
    for net in range(NETWORKS):
        folder = Path(f"{CNI_IPAM}/net{net}")
        for f in folder.iterdir() if folder.is_dir() else []:
            if f.name[0].isdigit():
                out[f.read_text().splitlines()[0].strip()] = f.name
    return {c.name: out[c.name] for c in cs}


# --- (a') podman's stack: netavark, one setup per container (bench/netavark.py) ---


def run_netavark(n: int, workdir: Path) -> dict[str, Any]:
    nv, cs = Netavark(workdir), containers(n + 1)

    def add(first: int, last: int) -> None:
        _netns_batch("add", last, first)
        for c in cs[first:last]:
            nv.run("setup", c)

    def delete() -> None:
        for c in cs:
            nv.run("teardown", c)
        _netns_batch("delete", n + 1)

    out: dict[str, Any] = {"cold": clock(lambda: add(0, n))}
    out["cold_proof"] = proof(n, published)
    out["add_one"] = clock(lambda: add(n, n + 1))
    out["add_one_proof"] = proof(n + 1, published)
    out["destroy"] = clock(delete)
    out["destroy"]["settle"] = wait_veths_gone()
    out["destroy"]["seconds"] += out["destroy"]["settle"]
    return out


# --- (b) a shell script of ip and nft commands ---


def _nft_script(cs: list[Container], bridges: str) -> str:
    ports = ", ".join(f"{c.host_port} : {c.address} . {CONTAINER_PORT}" for c in cs)
    subnets = ", ".join(subnet(j) for j in range(NETWORKS))
    elements = f"\n    elements = {{ {ports} }}" if cs else ""
    return f"""table ip shellbench {{
  map ports {{
    type inet_service : ipv4_addr . inet_service{elements}
  }}
  chain prerouting {{
    type nat hook prerouting priority -100
    fib daddr type local dnat ip to tcp dport map @ports
  }}
  chain output {{
    type nat hook output priority -100
    fib daddr type local dnat ip to tcp dport map @ports
  }}
  chain postrouting {{
    type nat hook postrouting priority 100
    ip saddr {{ {subnets} }} oifname != "{bridges}*" masquerade
    ip saddr 127.0.0.0/8 oifname "{bridges}*" masquerade
  }}
}}
"""


def run_shell(n: int, workdir: Path) -> dict[str, Any]:
    cs = containers(n)
    host = [
        f"link add br{j} type bridge\naddr add {gateway(j)}/16 dev br{j}\nlink set br{j} up\n"
        for j in range(NETWORKS)
    ]
    for c in cs:
        host.append(
            f"netns add {c.name}\n"
            f"link add ve{c.index} type veth peer name eth0 netns {c.name}\n"
            f"link set ve{c.index} master br{c.net} up\n"
        )
    (workdir / "host.ip").write_text("".join(host))
    for c in cs:
        (workdir / f"{c.name}.ip").write_text(
            f"link set lo up\nlink set eth0 up\naddr add {c.address}/16 dev eth0\n"
            f"route add default via {gateway(c.net)}\n"
        )
    (workdir / "rules.nft").write_text(_nft_script(cs, "br"))
    script = workdir / "up.sh"
    script.write_text(
        "set -e\n"
        f"sysctl -qw net.ipv4.ip_forward=1\n"
        f"ip -batch {workdir}/host.ip\n"
        + "".join(f"ip -n {c.name} -batch {workdir}/{c.name}.ip\n" for c in cs)
        + "".join(f"sysctl -qw net.ipv4.conf.br{j}.route_localnet=1\n" for j in range(NETWORKS))
        + f"nft -f {workdir}/rules.nft\n"
    )
    down = workdir / "down.sh"
    down.write_text("set -e\nnft delete table ip shellbench\n" + f"ip -batch {workdir}/down.ip\n")
    (workdir / "down.ip").write_text(
        "".join(f"netns delete {c.name}\n" for c in cs)
        + "".join(f"link del br{j}\n" for j in range(NETWORKS))
    )
    return _up_proof_down(["sh", str(script)], ["sh", str(down)], n)


def _up_proof_down(up: list[str], down: list[str], n: int) -> dict[str, Any]:
    """Cold apply, its proof, then destroy timed until the kernel has torn the veths down."""
    out: dict[str, Any] = {"cold": timed(up)}
    out["cold_proof"] = proof(n, published)
    out["destroy"] = timed(down)
    out["destroy"]["settle"] = wait_veths_gone()
    out["destroy"]["seconds"] += out["destroy"]["settle"]
    for r in (out["cold"], out["destroy"]):
        r.pop("stdout")
        r.pop("stderr")
    return out


# --- (c) the floor: hand-written pyroute2, only the necessary netlink calls ---


def run_floor(n: int, workdir: Path) -> dict[str, Any]:
    rules = workdir / "rules.nft"
    rules.write_text(_nft_script(containers(n), "fb"))
    floor = [sys.executable, "-m", "bench.floor"]
    return _up_proof_down([*floor, "up", str(n), str(rules)], [*floor, "down", str(n), str(rules)], n)


PEERS = {
    "ours": lambda n, w: run_ours(n, w),
    "ours-dual": lambda n, w: run_ours(n, w, dual=True),
    "ours-noop": run_noop,
    "cni-portmap": lambda n, w: run_cni(n, portmap=True),
    "cni-bridge": lambda n, w: run_cni(n, portmap=False),
    "netavark": run_netavark,
    "shell": run_shell,
    "floor": run_floor,
    "startup": lambda n, w: run_startup(w),
}


def main() -> None:
    peer, n, workdir = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    assert floor  # imported so a broken floor script fails before anything is timed
    print(json.dumps(PEERS[peer](n, workdir)))


if __name__ == "__main__":
    main()
