"""Reconcile in-process against a state observed once: what a long-running caller (a daemon) uses.

Observing a host reads every namespace; a daemon that applies spec after spec does not need to, since
nothing but its own applies changes our objects between two observations, as far as it knows.
`Session` keeps the observed state and advances it by the actions it applied. When a new spec differs
from the last one in some containers only, it plans just the part of the spec those containers reach:
them, and every member of their networks (whose hosts files list them), closed over shared networks.
Any failure drops what was kept, and `refresh()` (e.g. on a timer, or when the kernel reports a
change) observes again: the safety net knftables uses for its partial syncs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .desired import desired_state
from .diff import Action
from .dns import hook as dns
from .drivers.registry import driver_of
from .engine import Outcome, adopted_of, converge, scope_of
from .model import Key, State
from .nft import Nft
from .observe import Observed, observe
from .spec import Spec
from .statedir import ScopeRecord, StateDir


@dataclass
class _Kept:
    observed: Observed
    spec: Spec | None = None  # the last spec applied with success


class Session:
    def __init__(self, state_dir: StateDir) -> None:
        self.state_dir = state_dir
        self.nft = Nft()
        self._kept: dict[str, _Kept] = {}  # per scope

    def refresh(self) -> None:
        """Forget what was observed: the next apply observes the host again."""
        self._kept.clear()

    def apply(self, spec: Spec, *, dry_run: bool = False) -> Outcome:
        scope = scope_of(spec)
        with self.state_dir.lock():
            kept = self._kept.get(scope)
            if kept is None:
                adopted = adopted_of(spec, self.state_dir.load(scope))
                kept = self._kept[scope] = _Kept(observe(scope, adopted, self.nft))
            try:
                outcome, partial = self._converge(kept, spec, dry_run)
            except BaseException:
                self._kept.pop(scope, None)  # a partial apply: only a fresh observation knows
                raise
            if outcome.applied:
                advance(kept.observed.state, outcome.actions)
                if partial:  # converge published the part's names only: the resolver needs the whole scope's
                    record = self.state_dir.load(scope)
                    dns.after(self.state_dir, scope, spec, None, record, kept.observed.state)
                kept.spec = spec
            return outcome

    def _converge(self, kept: _Kept, spec: Spec, dry_run: bool) -> tuple[Outcome, bool]:
        """The outcome, and whether only a part of the spec was planned."""
        old = kept.spec
        part = reach(old, spec) if old is not None else None
        if part is None:
            return converge(spec, self.state_dir, kept.observed, self.nft, dry_run=dry_run), False
        if not part:
            return Outcome([], applied=not dry_run), False
        assert old is not None
        narrowed = narrow(old, spec, part, kept.observed, self.state_dir.load(scope_of(spec)))
        outcome = converge(
            narrowed.spec, self.state_dir, narrowed.observed, self.nft, dry_run=dry_run, keep=narrowed.keep
        )
        return outcome, not dry_run


@dataclass
class Part:
    """What planning only the part of a spec a change reaches needs (`narrow`)."""

    spec: Spec  # the new spec with only the part's containers
    observed: Observed  # the kept observation, only what the old part's desired state named
    keep: ScopeRecord  # the record entries of the rest (converge's `keep`)
    old_keys: frozenset[Key]  # the resources the old part's desired state named


def narrow(old: Spec, new: Spec, part: set[str], observed: Observed, previous: ScopeRecord) -> Part:
    """The part `part` (from `reach`) of the change from `old` to `new`, against the kept `observed`
    and the record `previous` the last apply left."""
    scope = scope_of(new)
    new_part, old_part = _only(new, part), _only(old, part)
    # What the last apply left of the part: the observed resources its desired state named.
    existing = frozenset(observed.foreign_links)
    keys = frozenset(desired_state(old_part, previous, scope, existing).resources.keys())
    have = observed.state.resources
    narrowed = dataclasses.replace(observed, state=State({k: have[k] for k in keys if k in have}))
    covered = {n for c in part for n in _networks(c, old, new)}
    keep = ScopeRecord(
        {n: r for n, r in previous.networks.items() if n not in covered},
        {c: p for c, p in previous.adopted.items() if c not in part},
    )
    return Part(new_part, narrowed, keep, keys)


def reach(old: Spec, new: Spec) -> set[str] | None:
    """Containers whose objects a change from `old` to `new` can touch; None when it is not a change of
    containers alone (networks or scope changed) or reaches every container."""
    if old.name != new.name or old.networks != new.networks:
        return None
    # Some drivers' host side depends on all members (a macvlan shim's routes, an overlay's FDB): whole.
    if any(not driver_of(net).per_container for net in new.networks.values()):
        return None
    everyone = old.containers.keys() | new.containers.keys()
    changed = {c for c in everyone if old.containers.get(c) != new.containers.get(c)}
    members: dict[str, set[str]] = {}
    for s in (old, new):
        for c, ctr in s.containers.items():
            for n in ctr.attachments():
                members.setdefault(n, set()).add(c)
    part, todo = set(changed), list(changed)
    while todo:
        for n in _networks(todo.pop(), old, new):
            for other in members[n] - part:
                part.add(other)
                todo.append(other)
    if part and len(part) == len(everyone):
        return None
    return part


def _networks(container: str, *specs: Spec) -> set[str]:
    """The networks `container` is attached to in any of `specs`."""
    return {n for s in specs if (ctr := s.containers.get(container)) for n in ctr.attachments()}


def _only(spec: Spec, part: set[str]) -> Spec:
    return spec.model_copy(update={"containers": {c: x for c, x in spec.containers.items() if c in part}})


def advance(state: State, actions: list[Action]) -> None:
    """The state after `actions` succeeded: what was planned is what the kernel now holds (a desired
    field left None, "don't care", stays uncompared in the next plan)."""
    for action in actions:
        if action.op == "delete":
            state.resources.pop(action.resource.key, None)
        else:
            state.add(action.resource)
