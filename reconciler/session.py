"""Reconcile in-process against a state observed once: what a long-running caller (a daemon) uses.

Observing a host reads every namespace; a daemon that applies spec after spec does not need to, since
nothing but its own applies changes our objects between two observations, as far as it knows.
`Session` keeps the observed state and advances it by the actions it applied, so an incremental
apply costs the planning and the changed objects only. Any failure drops the kept state, and
`refresh()` (e.g. on a timer, or when the kernel reports a change) observes again: the safety net
knftables uses for its partial syncs.
"""

from __future__ import annotations

from .diff import Action
from .engine import Outcome, adopted_of, converge, scope_of
from .model import State
from .nft import Nft
from .observe import Observed, observe
from .spec import Spec
from .statedir import StateDir


class Session:
    def __init__(self, state_dir: StateDir) -> None:
        self.state_dir = state_dir
        self.nft = Nft()
        self._observed: dict[str, Observed] = {}  # per scope

    def refresh(self) -> None:
        """Forget what was observed: the next apply observes the host again."""
        self._observed.clear()

    def apply(self, spec: Spec, *, dry_run: bool = False) -> Outcome:
        scope = scope_of(spec)
        with self.state_dir.lock():
            observed = self._observed.get(scope)
            if observed is None:
                adopted = adopted_of(spec, self.state_dir.load(scope))
                observed = self._observed[scope] = observe(scope, adopted, self.nft)
            try:
                outcome = converge(spec, self.state_dir, observed, self.nft, dry_run=dry_run)
            except BaseException:
                self._observed.pop(scope, None)  # a partial apply: only a fresh observation knows
                raise
            if outcome.applied:
                advance(observed.state, outcome.actions)
            return outcome


def advance(state: State, actions: list[Action]) -> None:
    """The state after `actions` succeeded: what was planned is what the kernel now holds (a desired
    field left None, "don't care", stays uncompared in the next plan)."""
    for action in actions:
        if action.op == "delete":
            state.resources.pop(action.resource.key, None)
        else:
            state.add(action.resource)
