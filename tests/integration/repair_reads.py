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

from daemon_steps import TABLE, elements, nft_json, quiesce, started

from reconciler import names
from reconciler.nft import Nft
from reconciler.rtnl import Stats
from reconciler.watch.daemon import Daemon


def bridges() -> list[Any]:
    """The elements of our `bridges` set, as the kernel has them."""
    return elements("set", "bridges")


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
    daemon, _ = started(Path(sys.argv[1]))
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
