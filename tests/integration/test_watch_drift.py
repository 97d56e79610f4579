"""Drift right after the watch daemon's own apply is repaired, every time (issue 12).

`drift_loop.py` runs inside the sandbox and drives a real daemon: after each applied reconcile it
changes one of our objects by hand within milliseconds (a host veth deleted, the ruleset flushed, an
address or the default route removed inside a container, a hosts file edited) and waits for the
repair. The resync timer is an hour away, so only an event can bring the repair; a single drift not
repaired within REPAIR_DEADLINE fails the test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from sandbox import Host

pytestmark = pytest.mark.integration

DRIVER = Path(__file__).with_name("drift_loop.py")
REPAIR_DEADLINE_MS = 2000.0
DRIFT_WITHIN_MS = 50.0


def run_loop(host: Host, mode: str, count: int) -> list[dict[str, Any]]:
    proc = host.run([sys.executable, str(DRIVER), mode, str(host.workdir), str(count)], timeout=600)
    results: list[dict[str, Any]] = json.loads(proc.stdout)
    assert len(results) == count, proc.stdout
    return results


def late(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in results if r["repair_ms"] is None or r["repair_ms"] > REPAIR_DEADLINE_MS]


def in_window(results: list[dict[str, Any]]) -> None:
    """Most drifts must land within DRIFT_WITHIN_MS of the apply's log line, or the loop does not
    test that window. A few may not: on a loaded machine starting `ip` alone can take longer, and
    those drifts (repaired all the same) still count for the misses."""
    slow = [r for r in results if r["after_apply_ms"] >= DRIFT_WITHIN_MS]
    assert len(slow) <= len(results) // 5, f"drift made too long after the apply: {slow}"


def test_drift_right_after_each_edit_is_repaired(host: Host) -> None:
    """50 spec edits (web moves address and port: its interface, route, hosts files and nft elements
    change), each followed at once by a drift of one of the five kinds."""
    results = run_loop(host, "edits", 50)
    assert not late(results), f"{len(late(results))} of 50 not repaired in time:\n{late(results)}"
    in_window(results)


def test_drift_right_after_the_first_apply_is_repaired(host: Host) -> None:
    """Fresh daemon starts (each after a destroy): the first apply, the event socket just seeded."""
    results = run_loop(host, "starts", 10)
    assert not late(results), f"{len(late(results))} of 10 not repaired in time:\n{late(results)}"
    in_window(results)


def test_drift_during_the_first_apply_is_repaired(host: Host) -> None:
    """The issue's reproduction: as soon as web's veth exists (mid-apply), it is deleted and the
    ruleset flushed. The apply's verification fails, it is rolled back and retried at once."""
    results = run_loop(host, "during", 5)
    assert not late(results), f"{len(late(results))} of 5 not repaired in time:\n{late(results)}"
