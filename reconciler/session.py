"""Reconcile in-process against a state observed once: what a long-running caller (a daemon) uses.

Observing a host reads every namespace; a daemon that applies spec after spec does not need to, since
nothing but its own applies changes our objects between two observations, as far as it knows.
`Session` keeps the observed state and advances it by the actions it applied. When a new spec differs
from the last one in some containers only, it plans just the part of the spec those containers reach
(`reach`): them alone, since each one's objects (namespace, interfaces, route, hosts file, port and
isolation elements) are its own; the others' record entries stay reserved, so the part's new
addresses avoid theirs (`narrow`). Any failure drops what was kept, and `refresh()` (e.g. on a timer,
or when the kernel reports a change) observes again: the safety net knftables uses for its partial
syncs.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass

from . import ipam, names, netns
from .desired import desired_state
from .diff import Action
from .dns import hook as dns
from .drivers.registry import driver_of
from .engine import Outcome, adopted_of, converge, scope_of
from .model import HostsFile, Iface, Key, Netns, State
from .nft import Nft
from .observe import Observed, observe
from .spec import Container, Spec
from .statedir import NetworkRecord, ScopeRecord, StateDir


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
                outcome, part = self._converge(kept, spec, dry_run)
            except BaseException:
                self._kept.pop(scope, None)  # a partial apply: only a fresh observation knows
                raise
            if outcome.applied:
                advance(kept.observed.state, outcome.actions)
                if part is not None:  # converge published nothing: the part's names join the scope's
                    record = self.state_dir.load(scope)
                    dns.after_part(self.state_dir, scope, spec, part, record, kept.observed.state)
                kept.spec = spec
            return outcome

    def _converge(self, kept: _Kept, spec: Spec, dry_run: bool) -> tuple[Outcome, frozenset[str] | None]:
        """The outcome, and the part's containers when only a part of the spec was applied."""
        old = kept.spec
        part = reach(old, spec) if old is not None else None
        if part is None:
            return converge(spec, self.state_dir, kept.observed, self.nft, dry_run=dry_run), None
        if not part:
            return Outcome([], applied=not dry_run), None
        assert old is not None
        narrowed = narrow(old, spec, part, kept.observed, self.state_dir.load(scope_of(spec)))
        try:
            outcome = converge(
                narrowed.spec,
                self.state_dir,
                narrowed.observed,
                self.nft,
                dry_run=dry_run,
                keep=narrowed.keep,
            )
        except ipam.Moved:  # the rest's addresses cannot stay: planned whole, it moves them
            return converge(spec, self.state_dir, kept.observed, self.nft, dry_run=dry_run), None
        return outcome, None if dry_run else narrowed.containers


@dataclass
class Part:
    """What planning only the part of a spec a change reaches needs (`narrow`)."""

    containers: frozenset[str]  # the part: `reach`'s, and whose recorded address a part's static one takes
    spec: Spec  # the new spec with only the part's containers
    observed: Observed  # the kept observation, only what the old part's desired state named
    keep: ScopeRecord  # the record entries of the rest (converge's `keep`): reserved, kept as they are
    old_keys: frozenset[Key]  # the resources the old part's desired state named


def narrow(old: Spec, new: Spec, part: set[str], observed: Observed, previous: ScopeRecord) -> Part:
    """The part `part` (from `reach`) of the change from `old` to `new`, against the kept `observed`
    and the record `previous` the last apply left."""
    scope = scope_of(new)
    part = part | _displaced(new, part, previous)
    new_part, old_part = _only(new, part), _only(old, part)
    # What the last apply left of the part: the observed resources its desired state named.
    existing = frozenset(observed.foreign_links)
    keys = frozenset(desired_state(old_part, previous, scope, existing).resources.keys())
    have = observed.state.resources
    narrowed = _appeared(
        dataclasses.replace(observed, state=State({k: have[k] for k in keys if k in have})), new_part, scope
    )
    keep = ScopeRecord(
        {n: _without(r, part) for n, r in previous.networks.items()},
        {c: p for c, p in previous.adopted.items() if c not in part},
    )
    return Part(frozenset(part), new_part, narrowed, keep, keys)


def _appeared(observed: Observed, part: Spec, scope: str) -> Observed:
    """`observed` with what appeared where the part's new objects go since it was observed: a
    namespace, host link or hosts file made by someone else sends no event, and memory would take the
    place for free (the apply would then fail on it, or a rollback take it for a crashed run's)."""
    have = observed.state.resources
    foreign_netns: set[str] = set()
    missing: set[str] = set()
    links: set[str] = set()
    hosts: set[str] = set()
    for c, ctr in part.containers.items():
        path = ctr.netns or names.netns_path(c)
        if (Netns.kind, c) in have:
            pass  # ours, as memory has it
        elif ctr.netns is not None and not netns.is_netns(path):
            missing.add(path)
        elif ctr.netns is None and os.path.lexists(path):
            foreign_netns.add(path)
        for n in ctr.attachments():
            veth = names.host_veth_ifname(scope, c, n)
            if (Iface.kind, f"{c}/{n}") not in have and os.path.lexists(f"/sys/class/net/{veth}"):
                links.add(veth)
        if (HostsFile.kind, c) not in have and os.path.lexists(os.path.join(names.ETC_NETNS_DIR, c, "hosts")):
            hosts.add(c)
    if not (foreign_netns or missing or links or hosts):
        return observed
    return dataclasses.replace(
        observed,
        foreign_netns=observed.foreign_netns | foreign_netns,
        missing_netns=observed.missing_netns | missing,
        foreign_links=observed.foreign_links | links,
        foreign_hosts=observed.foreign_hosts | hosts,
    )


def reach(old: Spec, new: Spec) -> set[str] | None:
    """Containers whose objects a change from `old` to `new` can touch; None when it is not a change of
    containers alone (networks, services, policies or scope changed) or reaches every container.

    A container's objects depend on its own attachments and the network (its bridge, subnet and
    gateway, the same for every member), so the part is the changed containers alone, with what
    does depend on other members handled so:
    - addresses: the other members' record entries are reserved (`narrow`, `ipam.allocate`), and a
      member whose recorded address a changed container's static address takes joins the part;
    - hosts files list their own container's names only; the resolver's records are the scope's,
      updated apart (dns.hook);
    - nft sets: a published port, an icc-off bridge port are elements of their container; bridges,
      masquerade and isolation elements are the network's (its record's subnet);
    - policy elements admit sources by address: a changed container a policy selects or admits
      makes the change whole (a destination's elements merge every source's address);
    - drivers whose host side depends on every member (`per_container` false: a macvlan shim's
      routes, an overlay's FDB and services) make it whole."""
    if any(getattr(old, f) != getattr(new, f) for f in _SHARED) or not own_objects(new):
        return None
    everyone = old.containers.keys() | new.containers.keys()
    changed = {c for c in everyone if _differs(old.containers.get(c), new.containers.get(c))}
    if changed and (_in_policy(old, changed) or _in_policy(new, changed)):
        return None
    if changed and len(changed) == len(everyone):
        return None
    return changed


def _differs(a: Container | None, b: Container | None) -> bool:
    """`a != b`, for 1,000 containers per change: identity first (a kept parse is the same object in
    both specs), then their fields, which is what a model's `==` compares (no extra fields, no
    private attributes) at a third of its cost."""
    if a is b:
        return False
    return a is None or b is None or a.__dict__ != b.__dict__


def own_objects(spec: Spec) -> bool:
    """Whether each container's objects are its own, apart from the networks': no driver's host side
    depends on every member (`per_container`)."""
    return all(driver_of(net).per_container for net in spec.networks.values())


# Every field of a spec but its containers: a change of any is planned whole.
_SHARED = tuple(f for f in Spec.model_fields if f != "containers")


def _in_policy(spec: Spec, changed: set[str]) -> bool:
    """Whether a policy or a service names one of `changed` (as a destination, a source or a backend)."""
    if any(not changed.isdisjoint(svc.backends) for svc in spec.services.values()):
        return True
    if not spec.policies:
        return False
    from .policy.model import rules

    return any(
        c in changed or not changed.isdisjoint(rule.containers)
        for c, their in rules(spec).items()
        for rule in their
    )


def _displaced(new: Spec, part: set[str], previous: ScopeRecord) -> set[str]:
    """Containers outside `part` whose recorded address a static address in the part takes: they are
    allocated again with it, as a whole plan would."""
    out: set[str] = set()
    for c in part:
        ctr = new.containers.get(c)
        for n, att in (ctr.attachments() if ctr else {}).items():
            rec = previous.networks.get(n)
            for static, held in (
                (att.ipv4_address, rec and rec.addresses),
                (att.ipv6_address, rec and rec.addresses6),
            ):
                if static is None or not held:
                    continue
                out.update(o for o, a in held.items() if o not in part and ipaddress.ip_address(a) == static)
    return out


def _without(rec: NetworkRecord, part: set[str]) -> NetworkRecord:
    """A network's record without the part's entries."""
    return dataclasses.replace(
        rec,
        addresses={c: a for c, a in rec.addresses.items() if c not in part},
        addresses6={c: a for c, a in rec.addresses6.items() if c not in part},
    )


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
