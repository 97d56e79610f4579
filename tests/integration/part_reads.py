"""What the watch daemon reads to verify a part (a spec edit adding one container), run INSIDE a
sandbox (see test_watch_part_verify.py).

Drives one `Daemon` in this process through its loop's steps: the first (full) reconcile, then a
spec edit adding a container with a published port (planned as a part), counting the nft listings
its verification made and the hints its own commit left; then another such edit during which the
port's DNAT element is deleted with `nft` between the apply and its verification (the verification
catches up with the kernel's events first: the deletion runs there), which must fail and roll back,
and the retry that follows it. Prints one JSON object.

    part_reads.py WORKDIR
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from daemon_steps import QUIET, TABLE, elements, quiesce, started

from reconciler import names
from reconciler.nft import Nft
from reconciler.watch.daemon import Daemon, Pending

ADD = '  api:\n    networks: [front]\n    ports: ["8081:81"]\n'
ADD_AGAIN = '  cache:\n    networks: [front]\n    ports: ["8082:82"]\n'


def ports() -> list[Any]:
    return elements("map", "ports_port")


def edit(daemon: Daemon, spec: Path, text: str) -> dict[str, Any]:
    quiesce(daemon)
    spec.write_text(spec.read_text() + text)
    listings, transactions = Nft.listings, Nft.transactions
    ok = daemon._reconcile(Pending({"spec"}, spec=True))
    out = {"ok": ok, "listings": Nft.listings - listings, "transactions": Nft.transactions - transactions}
    # What the apply's own commit left for the next loop (its nft events, its links' late echoes).
    pending = daemon._wait(time.monotonic() + QUIET)
    out["after"] = {"nft": pending.nft, "drift": "drift" in pending.triggers}
    return out


def main() -> None:
    daemon, spec = started(Path(sys.argv[1]))
    out: dict[str, Any] = {"added": edit(daemon, spec, ADD)}
    out["added"]["ports"] = ports()
    events = daemon._events
    assert events is not None
    catch_up = events.catch_up

    def deleting_first(timeout: float = 0.5) -> bool:
        """Someone deletes the new port's element right after the apply committed it."""
        events.catch_up = catch_up  # type: ignore[method-assign]
        subprocess.run(
            ["nft", "delete", "element", "inet", TABLE, "ports_port", "{ tcp . 8082 }"], check=True
        )
        return catch_up(timeout)

    events.catch_up = deleting_first  # type: ignore[method-assign]
    out["deleted"] = edit(daemon, spec, ADD_AGAIN)
    out["deleted"]["ports"] = ports()
    veth = names.host_veth_ifname(names.DEFAULT_SCOPE, "cache", "front")
    out["deleted"]["veth"] = subprocess.run(["ip", "link", "show", veth], capture_output=True).returncode == 0
    # The retry after the failure (a full observe) applies the edit.
    out["retried"] = daemon._reconcile(Pending({"retry"}, full=True))
    out["retried_ports"] = ports()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
