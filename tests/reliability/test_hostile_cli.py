"""Hostile input through the real CLI: every invalid spec of the corpus (tests/specs_invalid) and every
hostile text of test_spec_validation (alias bombs, megabyte files, deep nesting) is refused by
`reconciler apply` with exit 1, a located message, no traceback, within a time bound, and without any
change to a host that already runs a spec.
"""

from __future__ import annotations

import re
import resource
from pathlib import Path

import pytest
from figures import FIGURES
from hostcheck import diff, fingerprint
from sandbox import Host
from test_spec_validation import CASES, HOSTILE, _expectations

pytestmark = pytest.mark.integration

PETS = Path(__file__).resolve().parents[2] / "specs" / "pets-bridge.yaml"
# CPU seconds for one refusal, Python's start included (about 0.3 s alone). CPU time, not wall time,
# so that a loaded machine does not fail the bound; the parser's own wall-time bound is a unit test.
BOUND = 3.0


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def refuse(host: Host, path: Path, expected: list[str]) -> str | None:
    """Run `apply PATH`; None when it was refused as it should be, else what went wrong."""
    started = cpu_of_children()
    proc = host.reconciler("apply", str(path), timeout=120)
    took = cpu_of_children() - started
    err = proc.stderr
    located = re.match(rf"{re.escape(str(path))}(:\d+)?: \S", err)
    problems = [
        proc.returncode != 1 and f"exit {proc.returncode}",
        "Traceback" in err and "a traceback",
        not located and "no located first line",
        took > BOUND and f"took {took:.1f} CPU seconds",
        proc.stdout.strip() and f"printed {proc.stdout[:200]!r}",
        *[f"missing {line!r}" for line in expected if f"{path}:{line}" not in err],
    ]
    found = [p for p in problems if p]
    return f"{path.name}: {', '.join(found)}\n{err[:500]}" if found else None


def test_hostile_specs_are_refused_without_kernel_change(host: Host) -> None:
    assert host.reconciler("apply", str(PETS)).returncode == 0
    before = fingerprint(host)
    cases = [(path, _expectations(path)) for path in CASES]
    for name, text in HOSTILE.items():
        cases.append((host.write_spec(text, f"{name}.yaml"), []))
    failures = [f for case in cases if (f := refuse(host, *case))]
    assert not failures, "\n".join(failures)
    FIGURES["hostile"] += len(cases)
    after = fingerprint(host)
    assert after == before, "\n".join(diff(before, after))
