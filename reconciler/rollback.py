"""Apply a plan safely: verify the result, and on any failure restore the state observed before.

The revert plan is the pure diff again, with the pre-apply snapshot as the desired state and a fresh
observation as the observed one; both are restricted to this scope's objects, so a rollback never
touches anything else. It runs through the same executors, which order deletions before creations in
dependency order. nftables changes are one transaction and never half applied; netlink changes are
undone object by object. An interrupt (interrupt.py) is handled as a failure after the action in flight.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from . import interrupt
from .apply import Occupied, execute
from .apply.context import Context
from .diff import Action, plan
from .errors import (
    ApplyFailed,
    Interrupted,
    InterruptedRolledBack,
    ReconcilerError,
    RollbackFailed,
    RolledBack,
)
from .journal import Journal
from .model import Bridge, Iface, Resource, State
from .verify import verify


def revert_plan(snapshot: State, now: State) -> list[Action]:
    """The actions that take the host from `now` back to `snapshot` (both observed states)."""
    return plan(restorable(snapshot), now)


def restorable(snapshot: State) -> State:
    out = State()
    for res in snapshot.resources.values():
        if _restorable(res):
            # Veth ends that disagreed before (MTU 0, see observe) have no MTU to go back to, and a
            # bridge's MAC is the kernel's choice (its lowest port's) unless the spec derives one.
            if isinstance(res, Iface) and res.mtu == 0:
                res = replace(res, mtu=None)
            elif isinstance(res, Bridge):
                res = replace(res, mac=None)
            out.add(res)
    return out


def _restorable(res: Resource) -> bool:
    # A host veth whose container end was gone cannot be created again; its absence loses nothing.
    return not (isinstance(res, Iface) and not res.netns)


@dataclass(frozen=True)
class Verification:
    """What verifying an apply needs: the desired state, the snapshot observed before it, a way to
    observe the host again, and whether to roll back on failure."""

    desired: State
    snapshot: State
    observe: Callable[[], State]
    rollback: bool = True


def apply_verified(ctx: Context, journal: Journal, actions: list[Action], check: Verification) -> None:
    """Execute `actions`, verify the host against `check.desired`, and roll back to `check.snapshot` on
    failure or interrupt. Raises RolledBack (the host is as before), RollbackFailed, or ApplyFailed (no
    rollback); InterruptedRolledBack or Interrupted when a signal stopped the apply (interrupt.py)."""
    desired, snapshot, observe, rollback = check.desired, check.snapshot, check.observe, check.rollback
    try:
        journal.note(actions)
        execute(ctx, actions)
        verify(desired, observe)
        interrupt.check()  # a signal during the last action or the verification
    except Exception as e:  # netlink, OS and injected errors alike: all leave a half-applied host
        stopped = isinstance(e, Interrupted)
        reason = f"{e}: the action in flight was finished, no other started" if stopped else _reason(e)
        if not rollback:
            raise _not_rolled_back(reason, stopped, desired, observe) from e
        try:
            with interrupt.rolling_back():
                if isinstance(e, Occupied):  # an unmarked object there is someone else's: not a crash's
                    journal.forget(e.action.resource)
                journal.recover()
                undo = revert_plan(snapshot, observe())
                journal.note(undo)
                execute(ctx, undo)
                verify(restorable(snapshot), observe)
        except Exception as e2:
            raise RollbackFailed(
                f"{'' if stopped else 'apply failed: '}{reason}\nrollback failed too: {_reason(e2)}\n"
                "the host is partly changed; the next apply converges from here"
            ) from e2
        journal.clear()
        done = InterruptedRolledBack if stopped else RolledBack
        raise done(
            f"{'' if stopped else 'apply failed: '}{reason}\nrolled back: the host is as it was before "
            f"this apply ({len(undo)} actions undone)"
        ) from e
    journal.clear()


def _not_rolled_back(reason: str, stopped: bool, desired: State, observe: Callable[[], State]) -> ApplyFailed:
    if not stopped:
        return ApplyFailed(
            f"apply failed: {reason}\nnot rolled back (--no-rollback): the next apply converges from here"
        )
    try:
        left = f"{len(plan(desired, observe()))} actions of the plan remain"
    except Exception as e:  # the host is what it is; the message only loses a count
        left = f"what remains is unknown ({_reason(e)})"
    return Interrupted(f"{reason}\nnot rolled back (--no-rollback): the host is partly changed, {left}")


def _reason(e: Exception) -> str:
    if isinstance(e, ReconcilerError):
        return str(e)
    return f"{type(e).__name__}: {e}"
