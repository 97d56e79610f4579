"""Verify after apply: re-observe the kernel and compare it with the desired state, as nmstate does.

The comparison is the plan itself: the host matches when `plan(desired, observed)` is empty, so what
"matches" means is defined once, in diff.py (fields desired as None are "don't care"). The kernel may
lag (a link coming up, an address leaving tentative state), hence a few observations before giving up.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .diff import plan
from .errors import VerificationFailed
from .model import Iface, State

# Seconds to wait before each observation.
DELAYS = (0.0, 0.05, 0.2, 0.5)
SHOWN = 5


def mismatches(desired: State, observed: State) -> list[str]:
    """`path: desired X, observed Y` for every difference, in plan order."""
    out = []
    for action in plan(desired, observed):
        res = action.resource
        where = f"{res.kind} {res.id}"
        if action.op == "delete" and isinstance(res, Iface) and not res.netns:
            # The host end of a veth whose namespace is gone: the kernel removes it when it finishes
            # tearing the namespace down, in the background (apply leaves that to it on purpose).
            continue
        if action.op == "create":
            out.append(f"{where}: desired present, observed absent")
        elif action.op == "delete":
            out.append(f"{where}: desired absent, observed present")
        else:
            changes = action.changes()
            for name, (observed_value, desired_value) in changes.items():
                out.append(f"{where}: {name}: desired {desired_value!r}, observed {observed_value!r}")
            if not changes:
                out.append(f"{where}: to be redone, {action.cause}")
    return out


def verify(desired: State, observe: Callable[[], State]) -> None:
    """Raise VerificationFailed naming the first mismatches when the host still differs after the retries."""
    found: list[str] = []
    for delay in DELAYS:
        time.sleep(delay)
        found = mismatches(desired, observe())
        if not found:
            return
    more = f" (and {len(found) - SHOWN} more)" if len(found) > SHOWN else ""
    raise VerificationFailed("verification failed: " + "; ".join(found[:SHOWN]) + more)
