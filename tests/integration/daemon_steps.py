"""Steps of one watch `Daemon` driven in this process, for the drivers that run INSIDE a sandbox
(part_reads.py, repair_reads.py): start it on a small spec, let the kernel's late events settle,
read our nft sets as the kernel has them."""

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


def started(workdir: Path) -> tuple[Daemon, Path]:
    """A daemon following WORKDIR/specs/spec.yaml (SPEC), after its first (full) reconcile."""
    specs = workdir / "specs"
    specs.mkdir()
    spec = specs / "spec.yaml"
    spec.write_text(SPEC)
    daemon = Daemon(Options(specs, StateDir(DEFAULT_STATE_DIR), resync_interval=3600))
    daemon.tracker.start()
    assert daemon._reconcile(Pending({"start"}, spec=True, full=True))
    return daemon, spec


def nft_json(*args: str) -> list[dict[str, Any]]:
    out = subprocess.run(["nft", "-j", *args], check=True, capture_output=True, text=True).stdout
    objects: list[dict[str, Any]] = json.loads(out)["nftables"]
    return objects


def elements(kind: str, name: str) -> list[Any]:
    """The elements of our set or map (`kind`) `name`, as the kernel has them."""
    for obj in nft_json("list", kind, "inet", TABLE, name):
        if kind in obj:
            return sorted(obj[kind].get("elem", []), key=str)
    return []


def quiesce(daemon: Daemon) -> None:
    """Reconcile whatever the kernel still reports after the last step (late events such as a
    bridge's carrier coming back) until QUIET passes without a hint, so the next step's hints are
    its own."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pending = daemon._wait(time.monotonic() + QUIET)
        if "drift" not in pending.triggers:
            return
        daemon._reconcile(pending)
    raise SystemExit("the kernel kept reporting drift for 10 s")
