"""Ctrl-C (SIGINT) and SIGTERM in the middle of a large apply, on the real kernel.

The signal is sent from outside once the host shows the apply half-way (host veth ends appearing).
The first one lets the action in flight finish, then the apply rolls back (the host as before) or,
with --no-rollback, stops (the host half-built); either way the next dry-run refuses nothing and the
next apply converges. A second signal stops at once, and the next apply converges from there too.
A kill between creating an object and marking it (RECONCILER_FAULT_AFTER) leaves an unmarked one: the
dry-run after it must not refuse it as foreign either (the apply's recovery deletes it).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
from hostcheck import assert_no_duplicates, fingerprint, settled, steady
from sandbox import Background, Host
from test_crash import unmarked

pytestmark = pytest.mark.integration

BASE = 5
LARGE = 300
# Host veth ends that must exist before the signal goes: well into the apply, far from its end.
MID = 40
EXIT_WAIT = 240.0
NOT_OURS = "is not managed by this spec"


def spec(count: int) -> dict[str, Any]:
    containers = {
        f"c{i:03d}": {"networks": ["front"], "ports": [f"{10000 + i}:80"] if i % 10 == 0 else []}
        for i in range(count)
    }
    return {
        "version": 1,
        "name": "intr",
        "networks": {"front": {"subnet": "10.60.0.0/22"}},
        "containers": containers,
    }


def host_veths(host: Host) -> int:
    return int(host.run("ls /sys/class/net | grep -c '^nrv' || true").stdout.strip() or 0)


def wait_for(what: str, condition: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def start_large_apply(host: Host, tmp_path: Path, *extra: str) -> tuple[Background, Path]:
    large = host.write_spec(spec(LARGE), "large.yaml")
    apply = host.reconciler_background("apply", str(large), *extra, log=tmp_path / "apply.log")
    wait_for(
        f"{MID} host veths, or the apply's end",
        lambda: apply.proc.poll() is not None or host_veths(host) >= MID,
    )
    assert apply.proc.poll() is None, f"the apply ended before the signal:\n{apply.output()}"
    return apply, large


def ok(host: Host, *args: str) -> str:
    proc = host.reconciler(*args, timeout=300)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def converges(host: Host, large: Path) -> None:
    """A dry-run that refuses nothing, an apply, then a plan with nothing left."""
    planned = ok(host, "apply", str(large), "--dry-run")
    assert NOT_OURS not in planned and "Plan:" in planned, planned
    ok(host, "apply", str(large))
    ok(host, "apply", str(large), "--dry-run", "--exit-code")
    assert host_veths(host) == LARGE
    assert_no_duplicates(steady(host))


def base_host(host: Host) -> dict[str, Any]:
    ok(host, "apply", str(host.write_spec(spec(BASE), "base.yaml")))
    return steady(host)


def test_interrupt_rolls_back_then_the_next_apply_converges(host: Host, tmp_path: Path) -> None:
    before = base_host(host)
    apply, large = start_large_apply(host, tmp_path)
    apply.signal(signal.SIGINT)
    rc = apply.wait(EXIT_WAIT)
    out = apply.output()
    assert rc == 130, out
    assert "SIGINT received: finishing the action in flight, then rolling back" in out, out
    assert "interrupted by SIGINT" in out and "rolled back: the host is as it was before this apply" in out
    assert f"to apply again: reconciler apply {large}" in out, out
    assert "Traceback" not in out, out
    settled(host, before, "after an interrupted apply was rolled back")
    converges(host, large)


def test_interrupt_with_no_rollback_stops_half_built(host: Host, tmp_path: Path) -> None:
    base_host(host)
    apply, large = start_large_apply(host, tmp_path, "--no-rollback")
    apply.signal(signal.SIGTERM)
    rc = apply.wait(EXIT_WAIT)
    out = apply.output()
    assert rc == 130, out
    assert "SIGTERM received: finishing the action in flight, then stopping" in out, out
    assert "not rolled back (--no-rollback): the host is partly changed" in out, out
    assert "actions of the plan remain" in out and f"to finish the apply: reconciler apply {large}" in out
    assert BASE + MID <= host_veths(host) < LARGE
    assert not unmarked(host), "the action in flight was cut short"
    converges(host, large)


def test_second_interrupt_stops_at_once(host: Host, tmp_path: Path) -> None:
    base_host(host)
    apply, large = start_large_apply(host, tmp_path)
    apply.signal(signal.SIGINT)
    wait_for("the first signal's notice", lambda: "SIGINT received" in apply.output(), timeout=60)
    apply.signal(signal.SIGINT)
    rc = apply.wait(EXIT_WAIT)
    out = apply.output()
    assert rc == 130, out
    assert "interrupted again: stopped at once, not rolled back" in out, out
    assert "rolled back: the host is as it was" not in out, out
    assert "Traceback" not in out, out
    converges(host, large)


def test_dry_run_after_a_kill_between_create_and_mark_refuses_nothing(host: Host) -> None:
    small = host.write_spec(spec(BASE), "small.yaml")
    ok(host, "apply", str(small))
    clean = fingerprint(host)
    ok(host, "destroy", str(small))
    for n in range(1, 200):
        proc = host.reconciler("apply", str(small), env={"RECONCILER_FAULT_AFTER": str(n)})
        assert proc.returncode == -9, f"the apply survived op {n}: no kill left anything unmarked"
        if unmarked(host):
            break
    planned = ok(host, "apply", str(small), "--dry-run")
    assert NOT_OURS not in planned, planned
    ok(host, "apply", str(small))
    ok(host, "apply", str(small), "--dry-run", "--exit-code")
    settled(host, clean, "after a kill between create and mark and a re-apply")
