"""The reconcile loop: observe -> allocate -> desire -> check -> plan -> apply, under the state lock."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import interrupt, ipam, names, progress, scopes
from .desired import desired_state
from .diff import Action, conflicts, plan
from .dns import hook as dns
from .drivers.overlay.clusteripam import Allocation
from .drivers.overlay.wgkeys import DEFAULT_KEY_FILE
from .drivers.registry import DRIVERS
from .errors import HostConflict, PermissionProblem, RolledBack
from .model import State, Sysctl, container_of
from .observe import Observed, observe
from .statedir import DEFAULT_STATE_DIR, ScopeRecord, StateDir

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from .drivers.driver import Driver, Stage
    from .nft import Nft
    from .rollback import Verification
    from .spec import Net, Spec

CAP_NET_ADMIN = 12


@dataclass
class Outcome:
    actions: list[Action]
    applied: bool
    notices: list[str] = field(default_factory=list)  # what the apply did besides its plan (`Context.note`)
    compiled: Compiled | None = field(default=None, compare=False)  # what it planned, for the cache


def scope_of(spec: Spec) -> str:
    return spec.name or names.DEFAULT_SCOPE


def require_privileges() -> None:
    with open("/proc/self/status") as f:
        caps = next((line.split()[1] for line in f if line.startswith("CapEff:")), "0")
    if not int(caps, 16) >> CAP_NET_ADMIN & 1:
        raise PermissionProblem(
            "this needs root or CAP_NET_ADMIN (it changes network namespaces, links and nftables)"
        )


def reconcile(
    spec: Spec,
    state_dir: StateDir,
    *,
    dry_run: bool,
    destroy: bool = False,
    host: str | None = None,
    lock: Allocation | None = None,
    rollback: bool = True,
    key_file: str = DEFAULT_KEY_FILE,
) -> Outcome:
    """Bring this spec's scope to the spec (or, with `destroy`, remove everything the scope owns).
    `host` names this host among the spec's hosts; `lock` is the cluster allocation of SPEC.lock;
    `key_file` holds this host's WireGuard private key (read only for encrypted overlays).
    The caller has checked privileges (`require_privileges`)."""
    scope = scope_of(spec)
    if destroy:
        from .spec import Spec

        spec, host, lock = Spec(version=1, name=spec.name), None, None
    with state_dir.lock():
        observed, nft = observe_scope(scope, adopted_of(spec, state_dir.load(scope)), state_dir, dry_run)
        return converge(
            spec,
            state_dir,
            observed,
            nft,
            dry_run=dry_run,
            host=host,
            lock=lock,
            rollback=rollback,
            key_file=key_file,
        )


def observe_scope(
    scope: str, adopted: dict[str, str], state_dir: StateDir, dry_run: bool
) -> tuple[Observed, Nft]:
    """The scope's observation for an apply, after recovering what a crashed run left (a dry run
    recovers nothing and excuses it instead). The caller holds the state lock."""
    from .journal import Journal
    from .nft import Nft

    nft = Nft()
    journal = Journal(state_dir, scope)
    if not dry_run:
        journal.recover()  # what a crashed run created but had not marked yet
    progress.phase("observing the host")
    observed = observe(scope, adopted, nft)
    if dry_run:
        journal.excuse(observed)
    return observed, nft


def adopted_of(spec: Spec, previous: ScopeRecord) -> dict[str, str]:
    """Namespace path -> container for the namespaces we use but did not create (spec and record)."""
    return adopted_in(previous, {ctr.netns: c for c, ctr in spec.containers.items() if ctr.netns})


def adopted_in(previous: ScopeRecord, declared: dict[str, str]) -> dict[str, str]:
    """`adopted_of` with the spec's own adopted namespaces (`declared`: path -> container) given."""
    return {**{path: c for c, path in previous.adopted.items()}, **declared}


def converge(
    spec: Spec,
    state_dir: StateDir,
    observed: Observed,
    nft: Nft,
    *,
    dry_run: bool,
    host: str | None = None,
    lock: Allocation | None = None,
    keep: ScopeRecord | None = None,
    rollback: bool = True,
    key_file: str = DEFAULT_KEY_FILE,
) -> Outcome:
    """Plan against `observed` (fresh, or kept current by a caller such as `session`) and apply.
    `keep`: when `spec` is a part of the scope's spec (`session`), the record entries of the rest.
    The caller holds the state lock."""
    scope = scope_of(spec)
    previous = state_dir.load(scope)
    others = state_dir.others(scope)
    record, desired = prepare(
        spec,
        scope,
        previous,
        observed,
        state_dir,
        host=host,
        lock=lock,
        keep=keep,
        key_file=key_file,
        others=others,
    )
    taken = [str(p) for p in in_use(observed, others)]
    compiled = Compiled(scope, adopted_of(spec, previous), record, desired, taken, others)

    def publish() -> None:
        dns.after(state_dir, scope, spec, lock, record, desired)

    # A part's desired state names only the part's containers: not verifiable, nor published (the rest
    # would go); the caller (`session`) publishes the whole scope's names.
    return settle(
        compiled, previous, state_dir, observed, nft, dry_run, rollback, publish if keep is None else None
    )


@dataclass
class Compiled:
    """What `prepare` made of a spec for this host: what the rest of an apply needs of it."""

    scope: str
    adopted: dict[str, str]  # `adopted_of` the spec and the record before the apply
    record: ScopeRecord
    desired: State
    # What it read of the host and the other scopes: IPAM avoided these prefixes, and the conflict
    # checks compared it with these records.
    in_use: list[str]
    others: dict[str, ScopeRecord]


def settle(
    compiled: Compiled,
    previous: ScopeRecord,
    state_dir: StateDir,
    observed: Observed,
    nft: Nft,
    dry_run: bool,
    rollback: bool,
    publish: Callable[[], None] | None,
) -> Outcome:
    """Plan `compiled` against `observed` and apply it, verified; `publish`: serves the scope's DNS
    records after it (None: `compiled` is a part of the scope, applied unverified). The caller holds
    the state lock."""
    scope, record, desired = compiled.scope, compiled.record, compiled.desired
    actions = plan(desired, observed.state)
    if dry_run:
        return Outcome(actions, applied=False, compiled=compiled)
    if not actions and record == previous:
        if publish is not None:
            publish()  # it may have died, or never run
        # In sync: no write (a GitOps loop runs this all day).
        return Outcome(actions, applied=True, compiled=compiled)
    check = verification(desired, observed.state, scope, compiled.adopted, nft, rollback, touched(actions))
    with interrupt.changing():  # from here a first SIGINT or SIGTERM waits for the action in flight
        notices = commit(actions, scope, previous, record, state_dir, nft, check if publish else None)
    if publish is not None:
        publish()
    return Outcome(actions, applied=True, notices=notices, compiled=compiled)


def prepare(
    spec: Spec,
    scope: str,
    previous: ScopeRecord,
    observed: Observed,
    state_dir: StateDir,
    *,
    host: str | None = None,
    lock: Allocation | None = None,
    keep: ScopeRecord | None = None,
    key_file: str = DEFAULT_KEY_FILE,
    others: dict[str, ScopeRecord] | None = None,
) -> tuple[ScopeRecord, State]:
    """Allocate addresses and build the desired state; refuse one that would touch what is not ours.

    A cluster spec is narrowed to this host's part first (`host`, or the host whose address is
    configured here); `observed` gains the objects drivers read themselves (the overlay's VXLAN devices,
    FDB and neighbour entries). Each driver's stage takes part in every step (`drivers.driver.Stage`).
    `keep`: record entries for the rest of the scope when `spec` is only a part of it (`session`);
    `ipam.Moved` when they cannot stay as they are (the caller plans the whole spec then).
    `others`: the other scopes' records, when the caller has read them already."""
    stages = observe_stages(scope, observed, part_drivers(spec) if keep is not None else None)
    local = spec
    for stage in stages:
        local = stage.narrow(local, host, lock, key_file)
    if others is None:
        others = state_dir.others(scope)
    # A part's allocation keeps the rest's entries and hands out none of their addresses.
    record = ipam.allocate(local, previous, in_use(observed, others), keep)
    if keep is not None:
        record.adopted.update(keep.adopted)
    for stage in stages:
        stage.merge_record(record)
    desired = desired_state(local, record, scope, frozenset(observed.foreign_links))
    for stage in stages:
        stage.extend_desired(local, record, desired)
    problems = scope_conflicts(scopes.claims(local), record, observed, others) + host_conflicts(
        desired, observed
    )
    for stage in stages:
        problems += stage.conflicts(local, desired, observed.state, observed.foreign_links)
    refuse(problems + forwarding_conflicts(desired, observed))
    return record, desired


def observe_stages(scope: str, observed: Observed, drivers: Collection[Driver] | None = None) -> list[Stage]:
    """The stages of one `prepare`: every driver's, or only these `drivers'` (a part's, `part_drivers`);
    what each observed itself is added to `observed`."""
    stages = [driver.stage(scope, observed) for driver in (DRIVERS.values() if drivers is None else drivers)]
    for stage in stages:
        for resource in stage.resources:
            observed.state.add(resource)
    return stages


def host_conflicts(desired: State, observed: Observed) -> list[str]:
    """What of `desired` the host holds and is not ours (diff.conflicts)."""
    return conflicts(
        desired,
        observed.state,
        observed.foreign_links,
        observed.foreign_netns,
        observed.foreign_hosts,
        observed.missing_netns,
    )


def refuse(problems: list[str]) -> None:
    if problems:
        raise HostConflict("refusing to apply, nothing was changed:\n  " + "\n  ".join(problems))


def part_drivers(spec: Spec) -> list[Driver]:
    """The drivers that take part in planning and verifying a part of `spec` (`session.reach`:
    networks unchanged): those its networks use, all of them when it names hosts (the overlay's
    stage picks this host's containers). Another driver would observe what the part cannot touch
    (the overlay: every host address, 10 ms at 1,000 containers)."""
    if spec.hosts:
        return list(DRIVERS.values())
    used = {net.driver for net in spec.networks.values()}
    return [driver for driver in DRIVERS.values() if driver.name in used]


def commit(
    actions: list[Action],
    scope: str,
    previous: ScopeRecord,
    record: ScopeRecord,
    state_dir: StateDir,
    nft: Nft,
    check: Verification | None = None,
) -> list[str]:
    """Carry out a plan under the lock the caller holds, recording allocations around it; with `check`,
    verify the result and roll back on failure or interrupt (rollback.py, interrupt.py). Returns the
    apply's notices."""
    from .apply import execute
    from .apply.context import Context
    from .journal import Journal
    from .rollback import apply_verified

    # Allocations are recorded before the kernel changes, so a crash never hands an address out twice;
    # adopted namespaces stay recorded until a run succeeds, so a crashed one can still be cleaned up.
    pending = ScopeRecord(record.networks, {**previous.adopted, **record.adopted})
    if pending != previous:  # a port change allocates nothing: no write, no fsync
        _save(state_dir, scope, pending)
    ctx = Context(scope, nft)
    journal = Journal(state_dir, scope)
    dns.before(state_dir, actions)
    try:
        if check is None:
            journal.note(actions)
            execute(ctx, actions)
            journal.clear()
        else:
            apply_verified(ctx, journal, actions, check)
    except RolledBack:
        if pending != previous:
            _save(state_dir, scope, previous)
        dns.rolled_back(state_dir)
        raise
    finally:
        ctx.close()
    if record != pending:
        _save(state_dir, scope, record)
    return ctx.notices


def verification(
    desired: State,
    snapshot: State,
    scope: str,
    adopted: dict[str, str],
    nft: Nft,
    rollback: bool = True,
    containers: set[str] | None = None,
) -> Verification:
    """Verify `desired` (the scope's whole desired state) by observing the scope again; roll back to
    `snapshot`, the state observed before the apply. `containers`: the only namespaces the apply can
    change (`touched`), read again over the snapshot's other namespaces; the host level is read whole."""
    from .rollback import Verification

    if containers is None:
        return Verification(desired, snapshot, lambda: observe_all(scope, adopted, nft).state, rollback)
    read = containers

    def again() -> State:
        return over(snapshot, observe_all(scope, adopted, nft, read).state, read)

    return Verification(desired, snapshot, again, rollback)


def touched(actions: list[Action]) -> set[str]:
    """The containers whose namespaces `actions` change: every other namespace is as observed before."""
    return {c for action in actions if (c := container_of(action.resource)) is not None}


def over(snapshot: State, fresh: State, containers: set[str]) -> State:
    """`fresh` (the host level and `containers`' namespaces) over the snapshot's other namespaces."""
    out = State({k: r for k, r in snapshot.resources.items() if container_of(r) not in containers | {None}})
    out.resources.update(fresh.resources)
    return out


def snapshot(state_dir: StateDir, scope: str | None = None) -> dict[str, Observed]:
    """Observed state for `show`: of `scope`, or of every scope with records or marked objects here."""
    from .nft import Nft
    from .observe.scopes import marked_scopes

    nft = Nft()
    with state_dir.lock():
        scopes = [scope] if scope else sorted(set(state_dir.scopes()) | marked_scopes(nft))
        out = {}
        for one in scopes:
            adopted = {path: c for c, path in state_dir.load(one).adopted.items()}
            out[one] = observe_all(one, adopted, nft)
        return out


def observe_all(
    scope: str,
    adopted: dict[str, str],
    nft: Nft,
    containers: set[str] | None = None,
    *,
    hosts: set[str] | None = None,
    links: set[str] | None = None,
    drivers: Collection[Driver] | None = None,
    firewall: bool = True,
) -> Observed:
    """The scope's observed state with the objects drivers read themselves: what verification compares.
    `containers`, `hosts`, `links`: read only their namespaces, their hosts files, these host links
    (as `observe`); nothing that only conflict checks use. `drivers`: only these read theirs (a
    part's, `part_drivers`). `firewall=False`: without our nft tables (a part reads its own)."""
    observed = observe(
        scope, adopted, nft, containers, hosts=hosts, only_links=links, conflicts=False, firewall=firewall
    )
    for driver in DRIVERS.values() if drivers is None else drivers:
        for resource in driver.observe(scope, observed.state):
            observed.state.add(resource)
    return observed


def scope_conflicts(
    claims: scopes.Claims, record: ScopeRecord, observed: Observed, others: dict[str, ScopeRecord]
) -> list[str]:
    """What other scopes and foreign interfaces hold that this spec (its `claims`) would take."""
    holders = scopes.record_holders(others) + observed.interface_prefixes
    theirs = scopes.held_ports(observed.other_ports, others)
    return scopes.subnet_conflicts(claims, record, holders) + scopes.port_conflicts(claims.ports, theirs)


def in_use(observed: Observed, others: dict[str, ScopeRecord]) -> list[Net]:
    """The prefixes IPAM must not take: the host's and other scopes'."""
    taken: list[Net] = [*observed.host_prefixes, *observed.host_prefixes6]
    for record in others.values():
        taken.extend(p for n in record.networks.values() for p in n.prefixes())
    return taken


def forwarding_conflicts(desired: State, observed: Observed) -> list[str]:
    """Switching IPv6 forwarding on makes interfaces with accept_ra=1 drop the default route their
    router advertised (moby #43466): refused before any change, naming the fix."""
    key = ("sysctl", names.IPV6_FORWARDING)
    wanted, now = desired.resources.get(key), observed.state.resources.get(key)
    if not isinstance(wanted, Sysctl) or not isinstance(now, Sysctl) or wanted.value == now.value:
        return []
    return [
        f"interface {ifname} takes its IPv6 default route from router advertisements (accept_ra=1),"
        f" which the kernel ignores once IPv6 forwarding is on: set net.ipv6.conf.{ifname}.accept_ra=2"
        " (keep them while forwarding) first"
        for ifname in observed.ra_dependent
    ]


def _save(state_dir: StateDir, scope: str, record: ScopeRecord) -> None:
    if record.networks or record.adopted:
        state_dir.save(scope, record)
    else:
        state_dir.remove(scope)


def state_dir_from(option: str | None) -> StateDir:
    return StateDir(option or os.environ.get("RECONCILER_STATE_DIR") or DEFAULT_STATE_DIR)
