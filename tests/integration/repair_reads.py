"""What the watch daemon reads to repair drift, run INSIDE a sandbox (see test_watch_repair.py).

Drives one `Daemon` in this process through its own loop's steps: the first (full) reconcile, then
for each hand change the hints its event thread really reports (`_wait`) and the reconcile they
start (`_reconcile`), counting the netlink requests and nft listings each repair made. Prints one
JSON object per drift: whether it was repaired, the counts, and what the kernel shows after.

    repair_reads.py WORKDIR
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO))

from reconciler import names  # noqa: E402
from reconciler.nft import Nft  # noqa: E402
from reconciler.rtnl import Stats  # noqa: E402
from reconciler.statedir import DEFAULT_STATE_DIR, StateDir  # noqa: E402
from reconciler.watch.daemon import Daemon, Options, Pending  # noqa: E402

SPEC = """version: 1
networks:
  front:
    subnet: 10.20.0.0/24
containers:
  web:
    networks: [front]
    ports: ["8080:80"]
  db:
    networks: [front]
"""
TABLE = names.nft_table(names.DEFAULT_SCOPE)
QUIET = 0.5


def nft_json(*args: str) -> list[dict[str, Any]]:
    out = subprocess.run(["nft", "-j", *args], check=True, capture_output=True, text=True).stdout
    objects: list[dict[str, Any]] = json.loads(out)["nftables"]
    return objects


def bridges() -> list[Any]:
    """The elements of our `bridges` set, as the kernel has them."""
    for obj in nft_json("list", "set", "inet", TABLE, "bridges"):
        if "set" in obj:
            return sorted(obj["set"].get("elem", []), key=str)
    return []


def quiesce(daemon: Daemon) -> None:
    """Reconcile whatever the kernel still reports after the last repair (late events such as a
    bridge's carrier coming back) until QUIET passes without a hint, so the next change's hints
    are its own."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pending = daemon._wait(time.monotonic() + QUIET)
        if "drift" not in pending.triggers:
            return
        daemon._reconcile(pending)
    raise SystemExit("the kernel kept reporting drift for 10 s")


def repair(daemon: Daemon, change: list[str]) -> dict[str, Any]:
    """Make `change`, let the daemon's event thread report it, and reconcile what it reported."""
    quiesce(daemon)
    subprocess.run(change, check=True)
    requests, listings, transactions = Stats.requests, Nft.listings, Nft.transactions
    pending = daemon._wait(time.monotonic() + 10)  # the change's hints once settled (or the "resync")
    ok = pending.triggers == {"drift"} and daemon._reconcile(pending)
    return {
        "hinted": {"containers": sorted(pending.containers), "nft": pending.nft, "host": pending.host},
        "ok": ok,
        "netlink": Stats.requests - requests,
        "listings": Nft.listings - listings,
        "transactions": Nft.transactions - transactions,
    }


def main() -> None:
    workdir = Path(sys.argv[1])
    specs = workdir / "specs"
    specs.mkdir()
    (specs / "spec.yaml").write_text(SPEC)
    daemon = Daemon(Options(specs, StateDir(DEFAULT_STATE_DIR), resync_interval=3600))
    daemon.tracker.start()
    assert daemon._reconcile(Pending({"start"}, spec=True, full=True))
    expected = bridges()
    out: dict[str, Any] = {}
    veth = names.host_veth_ifname(names.DEFAULT_SCOPE, "web", "front")
    out["veth"] = repair(daemon, ["ip", "link", "del", veth])
    out["veth"]["back"] = subprocess.run(["ip", "link", "show", veth], capture_output=True).returncode == 0
    out["flush"] = repair(daemon, ["nft", "flush", "ruleset"])
    out["flush"]["bridges"] = bridges() == expected
    out["flush"]["ports"] = [
        o["map"].get("elem") for o in nft_json("list", "map", "inet", TABLE, "ports_addr") if "map" in o
    ]
    out["foreign"] = repair(daemon, ["nft", "add", "element", "inet", TABLE, "bridges", "{ nr-foreign0 }"])
    out["foreign"]["bridges"] = bridges() == expected
    print(json.dumps(out))


if __name__ == "__main__":
    main()
