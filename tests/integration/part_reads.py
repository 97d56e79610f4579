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

REPO = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO))

from reconciler import names  # noqa: E402
from reconciler.nft import Nft  # noqa: E402
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
ADD = '  api:\n    networks: [front]\n    ports: ["8081:81"]\n'
ADD_AGAIN = '  cache:\n    networks: [front]\n    ports: ["8082:82"]\n'
TABLE = names.nft_table(names.DEFAULT_SCOPE)
QUIET = 0.5


def ports() -> list[Any]:
    out = subprocess.run(
        ["nft", "-j", "list", "map", "inet", TABLE, "ports_port"], check=True, capture_output=True, text=True
    ).stdout
    for obj in json.loads(out)["nftables"]:
        if "map" in obj:
            return sorted(obj["map"].get("elem", []), key=str)
    return []


def quiesce(daemon: Daemon) -> None:
    """Reconcile whatever the kernel still reports (late events such as a bridge's carrier) until
    QUIET passes without a hint."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pending = daemon._wait(time.monotonic() + QUIET)
        if "drift" not in pending.triggers:
            return
        daemon._reconcile(pending)
    raise SystemExit("the kernel kept reporting drift for 10 s")


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
    workdir = Path(sys.argv[1])
    specs = workdir / "specs"
    specs.mkdir()
    spec = specs / "spec.yaml"
    spec.write_text(SPEC)
    daemon = Daemon(Options(specs, StateDir(DEFAULT_STATE_DIR), resync_interval=3600))
    daemon.tracker.start()
    assert daemon._reconcile(Pending({"start"}, spec=True, full=True))
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
