"""Fault injection for tests: die or fail at a chosen kernel operation, to prove crash safety and rollback.

Every kernel operation of an apply (a netlink request that changes something, a namespace created or
deleted, a file or sysctl written, the nftables transaction) calls `step()` once it is done.
`RECONCILER_FAULT_AFTER=N` SIGKILLs the process right after the N-th one: a crash at that instant.
`RECONCILER_FAIL_AFTER=N[,M...]` raises instead, as a failing kernel operation would; the count goes on
through the rollback, so a second index fails the rollback too. Unset (the normal case), `step` only counts.
"""

from __future__ import annotations

import os
import signal

from .errors import ApplyFailed

_count = 0


def _indexes(name: str) -> set[int]:
    return {int(n) for n in os.environ.get(name, "").split(",") if n.strip()}


_KILL_AT = _indexes("RECONCILER_FAULT_AFTER")
_FAIL_AT = _indexes("RECONCILER_FAIL_AFTER")


def step() -> None:
    global _count
    _count += 1
    if _count in _KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)
    if _count in _FAIL_AT:
        raise ApplyFailed(f"injected failure after kernel operation {_count} (RECONCILER_FAIL_AFTER)")


def operations() -> int:
    """Kernel operations done so far by this process."""
    return _count
