"""Drift made right after the watch daemon's own apply, run INSIDE a sandbox (see test_watch_drift.py).

One process drives the daemon, so the drift follows the apply by milliseconds rather than by a
process start per step: it waits for the daemon's log line of an applied reconcile (written once the
apply, verification included, is done), changes one of our objects by hand at once, and polls the
kernel until the object is back. Prints one JSON object: each drift with its kind, how long after the
log line it was made and how long its repair took (None: not repaired within MISSED_AFTER).

    drift_loop.py edits WORKDIR N    N spec edits to one daemon, each followed by a drift
    drift_loop.py starts WORKDIR N   N fresh daemon starts, each first apply followed by a drift
    drift_loop.py during WORKDIR N   N fresh daemon starts, a drift in the middle of the first apply
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO))

from reconciler import names  # noqa: E402

KINDS = ("veth", "nft", "address", "route", "hosts")
# A drift not repaired after this long counts as missed (the resync is an hour away).
MISSED_AFTER = 10.0
HOSTS = "/etc/netns/web/hosts"
NETWORKS = "version: 1\nnetworks:\n  front:\n    subnet: 10.20.0.0/24\n"


def address(step: int) -> str:
    return f"10.20.0.{10 + step % 2}"


def port(step: int) -> int:
    return 8080 + step % 2


def containers(step: int) -> str:
    """Each step moves web to another address and port: its interface, route, hosts files and nft
    elements all change, so the drift hits objects the apply just touched."""
    return (
        "version: 1\ncontainers:\n"
        f"  web:\n    networks:\n      front: {{ipv4_address: {address(step)}}}\n"
        f"    ports: ['{port(step)}:5000']\n"
        "  db:\n    networks: [front]\n"
    )


def sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def web_addresses() -> list[str]:
    out = sh("ip", "-n", "web", "-j", "-4", "addr", "show", "dev", "eth0").stdout
    return [a["local"] for link in json.loads(out or "[]") for a in link.get("addr_info", [])]


def drift(kind: str, step: int) -> tuple[Callable[[], object], Callable[[], bool]]:
    """How to make the drift, and the check that it was repaired: the state step's spec describes
    (known beforehand, so nothing is read between the apply and the drift)."""
    ip = address(step)
    if kind == "veth":
        veth = names.host_veth_ifname(names.DEFAULT_SCOPE, "web", "front")
        return lambda: sh("ip", "link", "del", veth), (
            lambda: sh("ip", "link", "show", veth).returncode == 0 and web_addresses() == [ip]
        )
    if kind == "nft":

        def table_back() -> bool:
            table = sh("nft", "list", "table", "inet", "netreconciler").stdout
            return f"{port(step)}" in table and ip in table

        return lambda: sh("nft", "flush", "ruleset"), table_back
    if kind == "address":
        return lambda: sh("ip", "-n", "web", "addr", "flush", "dev", "eth0"), (
            lambda: web_addresses() == [ip] and _default_route()
        )
    if kind == "route":
        return lambda: sh("ip", "-n", "web", "route", "del", "default"), _default_route

    def edit() -> None:
        with open(HOSTS, "a") as f:
            f.write("10.99.0.1 intruder\n")

    def hosts_back() -> bool:
        text = Path(HOSTS).read_text()
        return "intruder" not in text and any(line.split()[:1] == [ip] for line in text.splitlines())

    return edit, hosts_back


def _default_route() -> bool:
    return bool(json.loads(sh("ip", "-n", "web", "-j", "route", "show", "default").stdout or "[]"))


class Daemon:
    def __init__(self, workdir: Path) -> None:
        self.log = workdir / "watch.log"
        env = dict(os.environ, PYTHONPATH=str(REPO))
        argv = [sys.executable, "-m", "reconciler", "watch", str(workdir / "specs"), "--log-format", "json"]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [*argv, "--resync-interval", "3600"], stdout=out, stderr=subprocess.STDOUT, env=env
            )
        self.seen = {trigger: self.applied(trigger) for trigger in ("start", "spec", "")}

    def applied(self, trigger: str) -> int:
        """Applied reconciles logged so far whose trigger includes `trigger` ("": any)."""
        # Complete lines only: the daemon may be half-way through writing the last one.
        complete = self.log.read_text().split("\n")[:-1]
        lines = [json.loads(line) for line in complete if line.startswith("{")]
        return sum(1 for e in lines if e.get("result") == "applied" and trigger in e["trigger"])

    def wait_applied(self, trigger: str, deadline: float = 60.0) -> None:
        """Until a new applied reconcile with `trigger` is logged; polls the log every millisecond."""
        end = time.monotonic() + deadline
        while (count := self.applied(trigger)) <= self.seen[trigger]:
            if time.monotonic() > end or self.proc.poll() is not None:
                raise SystemExit(f"no applied reconcile ({trigger}) logged\n{self.log.read_text()}")
            time.sleep(0.001)
        self.seen[trigger] = count

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def measure(daemon: Daemon, kind: str, step: int) -> dict[str, object]:
    logged = time.monotonic()
    daemon.seen[""] = daemon.applied("")
    make, repaired = drift(kind, step)
    make()
    made = time.monotonic()
    while not repaired():
        if time.monotonic() > made + MISSED_AFTER:
            return {"kind": kind, "after_apply_ms": round((made - logged) * 1000, 1), "repair_ms": None}
        time.sleep(0.01)
    # The repair is logged after the kernel shows it: count it, so the next wait sees only new ones.
    daemon.wait_applied("")
    return {
        "kind": kind,
        "after_apply_ms": round((made - logged) * 1000, 1),
        "repair_ms": round((time.monotonic() - made) * 1000, 1),
    }


def edits(workdir: Path, count: int) -> list[dict[str, object]]:
    specs = workdir / "specs"
    daemon = Daemon(workdir)
    daemon.wait_applied("start")
    out = []
    for step in range(1, count + 1):
        tmp = specs / ".containers.yaml.tmp"
        tmp.write_text(containers(step))
        os.replace(tmp, specs / "containers.yaml")
        daemon.wait_applied("spec")
        out.append(measure(daemon, KINDS[step % len(KINDS)], step))
    daemon.stop()
    return out


def starts(workdir: Path, count: int) -> list[dict[str, object]]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = []
    for step in range(count):
        daemon = Daemon(workdir)
        daemon.wait_applied("start")
        out.append(measure(daemon, KINDS[step % len(KINDS)], 0))
        daemon.stop()
        destroy = [sys.executable, "-m", "reconciler", "destroy", str(workdir / "specs")]
        subprocess.run(destroy, env=env, check=True, capture_output=True)
    return out


def during(workdir: Path, count: int) -> list[dict[str, object]]:
    """The issue's reproduction: the veth deleted and the ruleset flushed as soon as web's veth
    exists, in the middle of the first apply (whose verification then fails: rolled back, retried)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    veth = names.host_veth_ifname(names.DEFAULT_SCOPE, "web", "front")
    out = []
    for _ in range(count):
        daemon = Daemon(workdir)
        end = time.monotonic() + 60
        while sh("ip", "link", "show", veth).returncode != 0:
            if time.monotonic() > end:
                raise SystemExit(f"web's veth never appeared\n{daemon.log.read_text()}")
            time.sleep(0.001)
        sh("sh", "-c", f"ip link del {veth}; nft flush ruleset")
        made = time.monotonic()
        _, table = drift("nft", 0)
        _, link = drift("veth", 0)
        repair_ms: float | None = None
        while time.monotonic() < made + MISSED_AFTER:
            if link() and table():
                repair_ms = round((time.monotonic() - made) * 1000, 1)
                break
            time.sleep(0.01)
        out.append({"kind": "veth+nft", "after_apply_ms": None, "repair_ms": repair_ms})
        daemon.stop()
        destroy = [sys.executable, "-m", "reconciler", "destroy", str(workdir / "specs")]
        subprocess.run(destroy, env=env, check=True, capture_output=True)
    return out


def main() -> None:
    mode, workdir, count = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    specs = workdir / "specs"
    specs.mkdir(exist_ok=True)
    (specs / "networks.yaml").write_text(NETWORKS)
    (specs / "containers.yaml").write_text(containers(0))
    results = {"edits": edits, "starts": starts, "during": during}[mode](workdir, count)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
