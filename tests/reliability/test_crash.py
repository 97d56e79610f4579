"""Crash safety and rollback, on the real kernel: kill or fail an apply at every kernel operation.

`RECONCILER_FAULT_AFTER=N` SIGKILLs the apply right after its N-th kernel operation (reconciler/fault.py);
the next apply must converge (a second plan is empty) to exactly what a clean apply builds, hand out no
address twice, and a destroy must then leave exactly what a clean destroy leaves: nothing leaked.
`RECONCILER_FAIL_AFTER=N` makes the N-th operation fail instead: the apply must roll back to exactly the
state before it. The sweep stops at the first N the apply survives, which is one past its last operation.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from figures import FIGURES
from hostcheck import assert_no_duplicates, fingerprint, raw, settled, steady
from sandbox import Host

pytestmark = pytest.mark.integration

# CI runs every CRASH_STRIDE-th index (about 90 s; all 220 of the 20-container spec take 18-35 min);
# `--crash-stride 1` runs them all.
CRASH_STRIDE = 13
FAIL_STRIDE = 29


def containers(count: int, offset: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i in range(offset, offset + count):
        nets = ["front"] + (["back"] if i % 3 == 0 else []) + (["sealed"] if i % 5 == 0 else [])
        out[f"c{i:02d}"] = {"networks": nets, "ports": [f"{9000 + i}:80"] if i % 4 == 0 else []}
    return out


# 20 containers on three networks (one with an auto-picked subnet, one internal without icc), ports.
SPEC: dict[str, Any] = {
    "version": 1,
    "name": "crash",
    "networks": {
        "front": {"subnet": "10.50.0.0/24"},
        "back": {},
        "sealed": {"internal": True, "icc": False},
    },
    "containers": containers(20),
}
# A change of almost everything: 6 containers go, 6 come, a subnet and an MTU change, ports move.
CHANGED: dict[str, Any] = {
    **SPEC,
    "networks": {**SPEC["networks"], "front": {"subnet": "10.51.0.0/24", "mtu": 1400}},
    "containers": {
        **containers(14),
        **containers(6, offset=30),
        "c01": {"networks": ["back", "front"], "ports": ["9100:80"]},
    },
}


def run(host: Host, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return host.reconciler(*args, env=env)


def ok(host: Host, *args: str) -> subprocess.CompletedProcess[str]:
    proc = run(host, *args)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def in_sync(host: Host, spec: Path) -> None:
    proc = run(host, "apply", str(spec), "--dry-run", "--exit-code")
    assert proc.returncode == 0, f"second plan not empty:\n{proc.stdout}\n{proc.stderr}"


def unmarked(host: Host) -> list[str]:
    """Our-looking links and namespaces without our mark: what a crash between create and mark leaves."""
    data = raw(host)
    out = [
        link["ifname"]
        for link in data["host"]["links"]
        if link["ifname"].startswith("nr") and not link.get("ifalias")
    ]
    for ns, space in data["netns"].items():
        lo = next((link for link in space["links"] if link["ifname"] == "lo"), {})
        if not lo.get("ifalias"):
            out.append(f"netns {ns}")
    return out


def sweep(stride: int, start: int = 1) -> range:
    return range(start, 10_000, stride)


def test_crash_at_every_kernel_operation(host: Host, request: pytest.FixtureRequest) -> None:
    stride = request.config.getoption("--crash-stride") or CRASH_STRIDE
    spec = host.write_spec(SPEC)
    ok(host, "apply", str(spec))
    clean = steady(host)
    assert_no_duplicates(clean)
    ok(host, "destroy", str(spec))
    empty = steady(host)

    survived = False
    for n in sweep(stride):
        proc = run(host, "apply", str(spec), env={"RECONCILER_FAULT_AFTER": str(n)})
        if proc.returncode == 0:
            survived = True  # n is past the last operation: the sweep is complete
            break
        assert proc.returncode == -9, f"kill after op {n}: exited {proc.returncode}\n{proc.stderr}"
        FIGURES["crashes"] += 1
        if unmarked(host):
            FIGURES["crashes_unmarked"] += 1
        ok(host, "apply", str(spec))
        in_sync(host, spec)
        after = settled(host, clean, f"after a kill at op {n} and a re-apply")
        assert_no_duplicates(after)
        ok(host, "destroy", str(spec))
        settled(host, empty, f"after a kill at op {n}, a re-apply and a destroy")
    assert survived
    assert FIGURES["crashes_unmarked"] > 0 or stride > 1, "no crash hit the window between create and mark"


def test_crash_during_update_and_destroy(host: Host, request: pytest.FixtureRequest) -> None:
    stride = (request.config.getoption("--crash-stride") or CRASH_STRIDE) * 4
    spec, changed = host.write_spec(SPEC), host.write_spec(CHANGED, "changed.yaml")
    ok(host, "apply", str(spec))
    ok(host, "apply", str(changed))  # addresses stick: the update's result differs from a fresh apply's
    target = steady(host)
    ok(host, "destroy", str(changed))
    empty = steady(host)
    for command, start, end, expected in (("apply", spec, changed, target), ("destroy", spec, spec, empty)):
        for n in sweep(stride, start=3):
            ok(host, "apply", str(start))
            proc = run(host, command, str(end), env={"RECONCILER_FAULT_AFTER": str(n)})
            if proc.returncode == 0:
                break
            assert proc.returncode == -9, f"{command}, kill after op {n}: {proc.returncode}\n{proc.stderr}"
            FIGURES["crashes"] += 1
            ok(host, command, str(end))
            if command == "apply":
                in_sync(host, end)
            after = settled(host, expected, f"{command}: after a kill at op {n} and a second run")
            assert_no_duplicates(after)
            if command == "apply":
                ok(host, "destroy", str(end))


def test_failure_at_any_operation_rolls_back_exactly(host: Host, request: pytest.FixtureRequest) -> None:
    stride = request.config.getoption("--crash-stride") or FAIL_STRIDE
    spec, changed = host.write_spec(SPEC), host.write_spec(CHANGED, "changed.yaml")
    ok(host, "apply", str(spec))
    before = steady(host)
    for n in sweep(stride):
        proc = run(host, "apply", str(changed), env={"RECONCILER_FAIL_AFTER": str(n)})
        if proc.returncode == 0:
            break
        assert proc.returncode == 1, f"fail at op {n}: exited {proc.returncode}\n{proc.stderr}"
        assert f"injected failure after kernel operation {n}" in proc.stderr, proc.stderr
        assert "rolled back: the host is as it was before this apply" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
        FIGURES["failures"] += 1
        settled(host, before, f"after a failure at op {n} and its rollback")
        in_sync(host, spec)


def test_failed_rollback_says_so_and_next_apply_converges(host: Host) -> None:
    spec, changed = host.write_spec(SPEC), host.write_spec(CHANGED, "changed.yaml")
    ok(host, "apply", str(spec))
    proc = run(host, "apply", str(changed), env={"RECONCILER_FAIL_AFTER": "40,41"})
    assert proc.returncode == 5, proc.stderr
    assert "injected failure after kernel operation 40" in proc.stderr, proc.stderr
    assert "rollback failed too: injected failure after kernel operation 41" in proc.stderr, proc.stderr
    assert "the next apply converges from here" in proc.stderr and "Traceback" not in proc.stderr
    FIGURES["rollback_failures"] += 1
    ok(host, "apply", str(changed))
    in_sync(host, changed)
    assert_no_duplicates(fingerprint(host))


def test_no_rollback_leaves_the_host_and_next_apply_converges(host: Host) -> None:
    spec, changed = host.write_spec(SPEC), host.write_spec(CHANGED, "changed.yaml")
    ok(host, "apply", str(spec))
    before = steady(host)
    proc = run(host, "apply", str(changed), "--no-rollback", env={"RECONCILER_FAIL_AFTER": "30"})
    assert proc.returncode == 1, proc.stderr
    assert "not rolled back (--no-rollback)" in proc.stderr, proc.stderr
    assert fingerprint(host) != before
    ok(host, "apply", str(changed))
    in_sync(host, changed)


def test_failure_while_adding_one_container_rolls_back_exactly(host: Host) -> None:
    """An add verifies only the namespace it touched, over the snapshot of the others (engine.touched);
    a failure at any of its operations still rolls the whole host back to exactly what it was."""
    grown = {**SPEC, "containers": {**SPEC["containers"], **containers(1, offset=40)}}
    spec, plus = host.write_spec(SPEC), host.write_spec(grown, "plus.yaml")
    ok(host, "apply", str(spec))
    before = steady(host)
    for n in sweep(1):
        proc = run(host, "apply", str(plus), env={"RECONCILER_FAIL_AFTER": str(n)})
        if proc.returncode == 0:
            break
        assert proc.returncode == 1, f"fail at op {n}: exited {proc.returncode}\n{proc.stderr}"
        assert "rolled back: the host is as it was before this apply" in proc.stderr, proc.stderr
        settled(host, before, f"after a failure at op {n} of an add and its rollback")
        in_sync(host, spec)
    assert n > 3, f"the add survived a failure at op {n}: it never reached the kernel"
    in_sync(host, plus)
