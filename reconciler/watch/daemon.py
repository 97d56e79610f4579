"""The watch loop: reconcile on spec edits and drift hints, resync on a timer, stop cleanly on signals.

Everything that touches the kernel runs in the main thread (pyroute2 sockets are per thread). Helper
threads only report: spec-file changes, netlink/nftables and hosts-file event hints, metric scrapes,
and (following git) each fetch of the remote. They queue a wake-up and the loop decides; the loop
verifies and checks out a new revision, which is then a spec edit like any other. Signals set flags;
the reconcile in flight always finishes, so SIGTERM never leaves half an apply behind.

The state lock is held only while reconciling, so a `reconciler apply` run meanwhile waits for the
daemon's reconcile, not for the daemon. No hint is ever dropped for looking like the echo of our own
apply: a hint is answered only by an observation that started after it was read, covered what it
names and was found matching the desired state (an apply's verification, or the observation of a
reconcile that found nothing to do), or by the full retry a failure schedules. Every other hint
leads to a re-observe and the pure diff: for our own echo that plan is empty, for a hand change it
is the repair. The event sources are subscribed before the first observation, and follow a new
container's namespace before the observation that first sees it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from .. import engine, ipam, names
from ..diff import Action, plan
from ..dns import hook as dns
from ..dns.supervise import Supervisor
from ..drivers.overlay import clusteripam
from ..drivers.overlay.wgkeys import DEFAULT_KEY_FILE
from ..errors import ApplyFailed, ReconcilerError, RolledBack, SpecError, message
from ..model import Bridge, HostsFile, Iface, Key, NftElement, NftTable, Resource, State, container_of
from ..nft import Nft
from ..observe import Observed, observe
from ..observe.nft import observe_elements, observe_firewall
from ..render import plan_output
from ..rollback import Verification
from ..session import advance, narrow, own_objects, reach
from ..spec import Spec
from ..statedir import ScopeRecord, StateDir
from ..store.mode import EtcdMode
from ..store.oneshot import etcd_mode
from . import cache, handoff
from .events import Drift, Events
from .files import watch_specs
from .gitremote import Fetched, Fetcher, GitFailed, GitRemote, Unverified
from .hostsfiles import HostsFiles
from .metrics import Metrics
from .report import Log, Reconciled
from .sources import Parses, load_specs
from .tracker import Tracker

# Drift events come in bursts: wait for a quiet gap. The kernel queues all the events of one change
# (a flushed ruleset, a deleted veth and its peer) before the call that made it returns, so they come
# within a few ms of each other; a hosts file may be written in several writes.
DRIFT_SETTLE = 0.01
FILES_SETTLE = 0.05
DRIFT_SETTLE_MAX = 0.5
RETRY_AFTER_FAILURE = 5.0
LOCK_HOLDER = "reconciler watch"
EXIT_PENDING = 2  # `apply --exit-code` with changes (cli.py)


@dataclass
class Options:
    path: Path
    state_dir: StateDir
    resync_interval: float = 60.0
    settle_ms: int = 50
    log_format: str = "text"
    metrics_address: tuple[str, int] | None = None
    host: str | None = None  # which of a cluster spec's hosts this is (None: by local address)
    key_file: str = DEFAULT_KEY_FILE  # this host's WireGuard private key (encrypted overlays)
    advertise: str | None = None  # etcd mode: this host's VTEP (None: towards the first endpoint)
    git: GitRemote | None = None  # follow this remote; `path` is then its checkout's spec path
    fetch_interval: float = 30.0


@dataclass
class Pending:
    """What the next reconcile must look at."""

    triggers: set[str] = field(default_factory=set)
    spec: bool = False
    fetched: Fetched | None = None  # the fetch thread's latest report (a new revision is a spec edit)
    full: bool = False
    host: bool = False
    nft: bool = False
    containers: set[str] = field(default_factory=set)
    # Containers whose hosts file changed: every observation but a part's reads all hosts files,
    # so their namespaces need not be read again.
    hosts: set[str] = field(default_factory=set)
    requests: list[handoff.Request] = field(default_factory=list)  # `reconciler apply`s handed over

    def add(self, hint: Drift) -> None:
        self.triggers.add("drift")
        self.full |= hint.full
        self.host |= hint.host
        self.nft |= hint.nft
        self.containers |= hint.containers
        self.hosts |= hint.hosts

    def __bool__(self) -> bool:
        return bool(self.triggers)

    @property
    def tables_alone(self) -> bool:
        """Only our nft tables are hinted at: nothing in a namespace or a link is to be read."""
        return self.nft and not (self.full or self.host or self.containers or self.hosts)


@dataclass(frozen=True)
class Answered:
    """An observation found matching the desired state, started at `at`: every hint read before `at`
    reports a change it saw. It answers those hints for what it compared: the whole scope
    (`containers` None), or these containers' namespaces and, with `host_level`, every host-level
    object (links, hosts files, overlay entries), and with `nft` our nft tables (None: with
    `host_level`). `hosts`: the containers whose hosts files it compared, when it read only those
    (None: every one with `host_level`, else those of `containers`)."""

    at: float
    containers: frozenset[str] | None = None
    host_level: bool = True
    hosts: frozenset[str] | None = None
    nft: bool | None = None

    def answers(self, hint: Drift) -> bool:
        if hint.at >= self.at:
            return False
        if self.containers is None:
            return True
        host = hint.host or bool(hint.entries)
        files = self.hosts if self.hosts is not None else None if self.host_level else self.containers
        tables = self.host_level if self.nft is None else self.nft
        return (
            not hint.full
            and hint.containers <= self.containers
            and (files is None or hint.hosts <= files)
            and (self.host_level or not host)
            and (tables or not hint.nft)
        )


class Daemon:
    def __init__(self, options: Options) -> None:
        self.opts = options
        self.log = Log(options.log_format)
        self.metrics = Metrics()
        self.spec: Spec | None = None
        # The lock files' allocation goes with the spec: a lock edit is a spec edit.
        self.lock: clusteripam.Allocation | None = None
        self._warned: set[str] = set()
        self.desired: State | None = None
        self.cache: Observed | None = None
        self._answered: Answered | None = None
        self._verified: Answered | None = None
        self._hints: list[Drift] = []
        self._spec_changed = False
        self._fetched: Fetched | None = None
        self._fetcher: Fetcher | None = None
        self._inbox_lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop = False
        self._hup = False
        self._record: ScopeRecord | None = None
        self._events: Events | None = None
        self._nft: Nft | None = None
        self._unapplied_spec = False
        self._failed_applying = False  # the last reconcile failed while changing the host
        self._retrying = False  # the last reconcile failed: a full retry is scheduled
        self._parses = Parses()
        self.tracker = Tracker(options, self.log, self.metrics)
        self._deferred_spec = False  # a spec edit that came while suspended
        self._spec_revision = ""  # the git revision `spec` came from ("" when following files)
        self._etcd: EtcdMode | None = None  # etcd mode (`cluster:`): the store the cluster lives in
        self._dns_published = False  # the resolver has this daemon's records
        self._requests: list[handoff.Request] = []
        self._handed_specs = handoff.Specs(self._parses)

    # Helper threads: record and wake the loop, nothing else.
    def _notify_spec(self) -> None:
        with self._inbox_lock:
            self._spec_changed = True
        self._wake()

    def _notify_drift(self, hint: Drift) -> None:
        with self._inbox_lock:
            self._hints.append(hint)
        self._wake()

    def _notify_request(self, request: handoff.Request) -> None:
        with self._inbox_lock:
            self._requests.append(request)
        self._wake()

    def _notify_fetch(self, fetched: Fetched) -> None:
        with self._inbox_lock:
            self._fetched = fetched
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self._wake_w.send(b"x")

    def _on_signal(self, signum: int, _: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._hup = True
        else:
            self._stop = True

    def run(self) -> int:
        if self.opts.git is None and not self.opts.path.exists():
            # Nothing to watch either: inotify needs the file's directory to exist.
            raise ReconcilerError(f"{self.opts.path}: no such file or directory")
        self.tracker.start()
        if self.opts.git is not None:
            self.opts.git.prepare()
            self._fetcher = Fetcher(self.opts.git, self.opts.fetch_interval, self._notify_fetch)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        # A signal's byte on this socket ends the select below; the handler above runs right after.
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        if self.opts.metrics_address is not None:
            host, port = self.opts.metrics_address
            try:
                self.metrics.serve(host, port)
            except OSError as e:
                raise ReconcilerError(f"cannot serve metrics on {host}:{port}: {e.strerror or e}") from e
        if self.opts.git is None:
            watch_specs(self.opts.path, self.opts.settle_ms, self._notify_spec)
        try:
            HostsFiles(self._notify_drift).start()
        except OSError as e:
            raise ReconcilerError(f"cannot watch the hosts files in {names.ETC_NETNS_DIR}: {e}") from e
        Supervisor(self.opts.state_dir.path, self.log.message).start()
        server = handoff.Server(self.opts.state_dir.path, self._notify_request)
        try:
            server.start()
        except OSError as e:  # `apply` then applies locally, as without a daemon
            self.log.message(f"not serving `reconciler apply` on {server.path}: {e}")
        self.log.message(f"watching {self.tracker.source} (resync every {self.opts.resync_interval:g} s)")
        pending = Pending({"start"}, spec=True, full=True) if self._resume_revision() else Pending()
        if self._fetcher is not None:
            self._fetcher.start()
        next_resync = time.monotonic() + self.opts.resync_interval
        failures = 0
        while not self._stop:
            started = time.time()  # after this pass's triggers were collected (a SIGHUP came before)
            level = self.tracker.suspension()
            if pending.fetched is not None:
                self._fetch(pending, pending.fetched, suspended=level is not None)
            requests, pending.requests = pending.requests, []  # answered below, whatever the level
            pending.triggers.discard("apply")
            self._defer_edits(pending, suspended=level is not None)
            if level == "all":
                pending = Pending()  # nothing is reconciled, drift included; `resume` resyncs
            # Following git, nothing is reconciled before a first revision is checked out.
            if pending and (self._fetcher is None or self.tracker.checked_out):
                ok = self._reconcile(pending)
                failures = 0 if ok else failures + 1
                self._retrying = not ok
                # After a failure, a full retry soon, then less often: a refusal (a foreign interface
                # in the way) may last. A full pass (start, resync, signal) always re-arms the timer.
                retry = min(RETRY_AFTER_FAILURE * 2 ** max(failures - 1, 0), self.opts.resync_interval)
                if failures == 1 and self._failed_applying:
                    # Most likely a hand change during the apply (an object gone under an action, or
                    # a verification mismatch): repair it now; a failure that persists backs off.
                    retry = 0.0
                wait = self.opts.resync_interval if ok else retry
                if pending.full:
                    next_resync = time.monotonic() + wait
                elif not ok:
                    next_resync = min(next_resync, time.monotonic() + wait)
            # `reconciler sync` waits for a pass that fetched (git) or resynced on its SIGHUP (files).
            if pending.fetched is not None:
                self.tracker.passed(pending.fetched.started)
            elif "signal" in pending.triggers and self._fetcher is None:
                self.tracker.passed(started)
            for request in requests:
                if not self._handed(request):
                    # Memory was dropped and the hints read so far left to a full reconcile: now.
                    next_resync = time.monotonic()
            pending = self._wait(next_resync)
        server.close()
        self.log.message("stopping: no reconcile in flight")
        return 0

    def _resume_revision(self) -> bool:
        """Whether there is a spec to start with: the files, or (following git) the revision the last
        run applied, checked out again, so drift repair does not wait for the remote."""
        git = self.opts.git
        if git is None:
            return True
        revision = self.tracker.previously_applied()
        prefix = git.revision("")
        if revision is None or not revision.startswith(prefix):
            return False
        try:
            git.checkout(revision.removeprefix(prefix))
        except GitFailed as e:
            self.log.message(f"not resuming from {revision}: {e}")
            return False
        self.tracker.checked_out = revision
        return True

    def _fetch(self, pending: Pending, fetched: Fetched, *, suspended: bool) -> None:
        """A fetch's outcome: a new tip, verified and checked out, is a spec edit. While suspended
        the tip is shown, not checked out: `resume` brings it in."""
        git = self.opts.git
        assert git is not None
        if fetched.sha is None:
            self.tracker.fetched(None, fetched.error)
            return
        sha = fetched.sha
        revision = git.revision(sha)
        self.tracker.fetched(revision, None)
        if revision in (self.tracker.checked_out, self.tracker.refused):
            return
        if suspended:
            self.tracker.hold(revision)
            return
        try:
            git.verify(sha)
            git.checkout(sha)
        except Unverified as e:
            self.tracker.refuse(revision, str(e), engine.scope_of(self.spec) if self.spec else "")
            return
        except GitFailed as e:
            self.tracker.fetched(revision, str(e))
            return
        self.tracker.checked_out = revision
        pending.triggers.add("git")
        pending.spec = True

    def _defer_edits(self, pending: Pending, *, suspended: bool) -> None:
        """While suspended, a spec edit waits (drift repair goes on with the applied spec)."""
        if suspended and pending.spec:
            pending.spec = False
            pending.triggers.discard("spec")
            pending.triggers.discard("git")
            self._deferred_spec = True
            self.tracker.hold("a spec edit")
        elif not suspended and self._deferred_spec:
            self._deferred_spec = False
            pending.spec = True
            pending.triggers.add("spec")

    def _wait(self, resync_at: float) -> Pending:
        """Sleep until there is something to do: a spec edit, a signal, the resync timer, or drift
        hints that have settled (no new one for DRIFT_SETTLE, FILES_SETTLE once a hosts file is
        named, or DRIFT_SETTLE_MAX after the first).
        After a failure, hints wait for the retry (a full reconcile, which sees what they report): a
        rolled-back apply's own events must not turn the backoff into a loop."""
        pending = Pending()
        first_drift: float | None = None
        quiet_at: float | None = None
        while not self._stop:
            new_drift = self._collect(pending)
            now = time.monotonic()
            if new_drift and not self._retrying:
                first_drift = first_drift or now
                settle = FILES_SETTLE if pending.hosts else DRIFT_SETTLE
                quiet_at = min(now + settle, first_drift + DRIFT_SETTLE_MAX)
            if now >= resync_at:
                pending.triggers.add("resync")
                pending.full = True
            if pending.triggers - {"drift"} or pending.fetched or (quiet_at is not None and now >= quiet_at):
                break
            wake_at = resync_at if quiet_at is None else min(resync_at, quiet_at)
            select.select([self._wake_r], [], [], wake_at - now)
            with contextlib.suppress(BlockingIOError):
                while self._wake_r.recv(4096):
                    pass
        return pending

    def _collect(self, pending: Pending) -> bool:
        """Move what the threads and signals reported into `pending`; True when new drift came."""
        with self._inbox_lock:
            hints, self._hints = self._hints, []
            spec, self._spec_changed = self._spec_changed, False
            fetched, self._fetched = self._fetched, None
            requests, self._requests = self._requests, []
        if requests:
            pending.requests.extend(requests)
            pending.triggers.add("apply")
        if fetched is not None:
            pending.fetched = fetched
        if spec:
            pending.triggers.add("spec")
            pending.spec = True
        if self._hup:
            self._hup = False
            pending.triggers.add("signal")
            pending.full = True
            if self._fetcher is not None:
                self._fetcher.now()
        answered = self._answered
        fresh = [h for h in hints if answered is None or not answered.answers(h)]
        for hint in fresh:
            pending.add(hint)
        return bool(fresh)

    def _reconcile(self, pending: Pending) -> bool:
        """One reconcile; False when it failed (the next one retries with a full observe)."""
        start = time.monotonic()
        trigger = "+".join(sorted(pending.triggers))
        spec, lock, revision = self.spec, self.lock, self._spec_revision
        if pending.spec or self._unapplied_spec:
            try:
                spec = load_specs(self.opts.path, self._parses)
                if spec.cluster is not None:
                    spec, lock, warning = (*self._from_store(spec), None)
                else:
                    lock, warning = clusteripam.pinned(self.opts.path, spec)
            except ReconcilerError as e:
                # An unreadable lock file counts as an invalid edit, like a spec error.
                problems = [str(p) for p in e.problems] if isinstance(e, SpecError) else [str(e)]
                problems = self.tracker.relative(problems)
                self.log.problems(problems)
                spec, lock = self.spec, self.lock
                kept = "keeping the last good spec" if self.spec else "nothing applied yet"
                tried = self.tracker.checked_out
                r = Reconciled(trigger, "partial", "invalid", time.monotonic() - start, error=kept)
                r = dataclasses.replace(r, revision=tried, problems=problems)
                self._report(r, scope_spec=self.spec, attempt=True)
                if self.spec is None or not (
                    pending.full or pending.containers or pending.hosts or pending.host or pending.nft
                ):
                    return True
            else:
                revision = self.tracker.checked_out
                if warning and warning not in self._warned:
                    self._warned.add(warning)
                    self.log.message(f"warning: {warning}")
        assert spec is not None
        attempt = spec is not self.spec  # a new spec (revision) is tried, not only the applied one kept
        part = self._reached(pending, spec, lock)
        # A part is planned from memory: which namespaces a re-read would cover does not matter then.
        containers = self._partial_scope(pending, spec) if part is None else part
        hints = pending if part is None and self._repairs(pending, spec, lock) else None
        mode = "full" if containers is None else "partial"
        try:
            with self.opts.state_dir.lock(holder=LOCK_HOLDER):
                actions, repaired, mode, _ = self._converge(spec, lock, containers, part, hints=hints)
        except (ReconcilerError, OSError) as e:
            self._forget(spec)
            self._failed_applying = isinstance(e, ApplyFailed)
            # A rolled-back apply left the host as it was: counted apart, retried like any failure.
            result = "rolled_back" if isinstance(e, RolledBack) else "failed"
            r = Reconciled(trigger, mode, result, time.monotonic() - start, error=str(e), revision=revision)
            self._report(r, scope_spec=spec, attempt=attempt)
            return False
        except Exception as e:  # a kernel refusal (NetlinkError) or a bug: keep serving, resync later
            self._forget(spec)
            self._failed_applying = False
            error = f"{type(e).__name__}: {e}"
            r = Reconciled(trigger, mode, "failed", time.monotonic() - start, error=error, revision=revision)
            self._report(r, scope_spec=spec, attempt=attempt)
            return False
        self._unapplied_spec = False
        self._spec_revision = revision
        result = "applied" if actions else "in_sync"
        r = Reconciled(trigger, mode, result, time.monotonic() - start, actions, revision=revision)
        self._report(r, repaired, scope_spec=spec, attempt=attempt)
        return True

    def _from_store(self, spec: Spec) -> tuple[Spec, clusteripam.Allocation]:
        """etcd mode: this host's spec made the cluster's from the store (`reconciler/store/`)."""
        scope = engine.scope_of(spec)
        if self._etcd is None:
            self._etcd = etcd_mode(spec, self.opts, self.log.message)
            self._etcd.follow(self._notify_spec, lambda up: self.metrics.store_up.labels(scope).set(up))
            self.metrics.store_up.labels(scope).set(1)
        # The cluster spec names this host, by the address it advertises.
        self.opts.host = self._etcd.host
        return self._etcd.resolve(spec, self.opts.state_dir.load(scope), self.opts.path)

    def _handed(self, request: handoff.Request) -> bool:
        """A `reconciler apply` handed over the socket (handoff.py). It is planned and verified as a spec
        edit is, against memory; once applied, the daemon follows the handed spec (drift is repaired
        towards it) until its own source changes (an edit, a new commit) or it restarts: the last
        writer wins. A spec of another scope, or a daemon without a current observation, is left to
        a local apply. False when an apply failed (memory is then dropped, as after any failure)."""
        if not request.take():
            return True  # the client stopped waiting
        what = f"apply {request.path}" + (" --dry-run" if request.dry_run else "")
        declined = self._declines(request)
        if declined is None:
            assert self.spec is not None
            try:
                spec = self._handed_specs.load(request)
                lock, warning = clusteripam.pinned(request.path, spec)
            except ReconcilerError as e:
                self.log.message(f"handed over: {what}: invalid, nothing changed")
                request.done("", message(e) + "\n", e.exit_code)
                return True
            if engine.scope_of(spec) != engine.scope_of(self.spec):
                declined = f"the daemon manages scope {engine.scope_of(self.spec)}"
            elif spec.cluster is not None:  # its addresses are the store's: `apply` claims them itself
                declined = "etcd mode: apply reconciles against the store itself"
        if declined is not None:
            self.log.message(f"handed over: {what}: left to the client ({declined})")
            request.local(declined)
            return True
        assert self.spec is not None
        self.log.message(f"handed over: {what}")
        noted = f"warning: {warning}\n" if warning else ""
        if spec is self.spec:
            spec = spec.model_copy()  # a new spec object: `_reached` compares it with the applied one
        start = time.monotonic()
        pending = Pending({"apply"}, spec=True)
        part = self._reached(pending, spec, lock)
        containers = self._partial_scope(pending, spec) if part is None else part
        revision = f"apply {request.path}"
        try:
            with self.opts.state_dir.lock(holder=LOCK_HOLDER):
                actions, repaired, mode, notices = self._converge(
                    spec, lock, containers, part, dry_run=request.dry_run, rollback=request.rollback
                )
        except Exception as e:  # as a local apply fails: a message and its exit code, the daemon goes on
            known = isinstance(e, ReconcilerError)
            error = str(e) if known else f"{type(e).__name__}: {e}"
            if not request.dry_run:
                self._forget(self.spec)  # the spec followed stays; memory is read again
                result = "rolled_back" if isinstance(e, RolledBack) else "failed"
                took = time.monotonic() - start
                r = Reconciled("apply", "partial", result, took, error=error, revision=revision)
                self._report(r, scope_spec=spec, attempt=True)
            code = e.exit_code if isinstance(e, ReconcilerError) else 1
            request.done("", f"{noted}error: {error}\n", code)
            return request.dry_run
        if not request.dry_run:
            self._spec_revision = revision
            result = "applied" if actions else "in_sync"
            r = Reconciled("apply", mode, result, time.monotonic() - start, actions, revision=revision)
            self._report(r, repaired, scope_spec=spec, attempt=True)
        outcome = engine.Outcome(actions, applied=not request.dry_run, notices=notices)
        code = EXIT_PENDING if request.exit_code and actions else 0
        request.done(plan_output(outcome, request.output, request.colour), noted, code)
        return True

    def _declines(self, request: handoff.Request) -> str | None:
        """Why the daemon leaves this apply to the client, or None."""
        if self.tracker.suspension() is not None:
            return "the daemon is suspended"
        if self.spec is None or self.cache is None or self._retrying:
            return "the daemon has no current observation (starting, or retrying after a failure)"
        if request.host is not None and request.host != self.opts.host:
            return f"the daemon runs as host {self.opts.host or '(found by address)'}"
        if request.key_file is not None and request.key_file != self.opts.key_file:
            return f"the daemon uses the key file {self.opts.key_file}"
        if request.advertise is not None and request.advertise != self.opts.advertise:
            return f"the daemon advertises {self.opts.advertise or '(its route towards the store)'}"
        return None

    def _forget(self, spec: Spec) -> None:
        """After a failure: observe everything next time, with a fresh nftables context, and read
        the spec again if this one never got applied (the retry must not fall back to the old one).
        The hints read until now are answered by that full observation, which the retry's backoff
        schedules (and which the rolled-back apply's own events must not bring forward)."""
        self._answered = Answered(time.monotonic())
        self.cache = None
        self._nft = None
        self._unapplied_spec = self._unapplied_spec or spec is not self.spec

    def _partial_scope(self, pending: Pending, spec: Spec) -> set[str] | None:
        """The containers whose namespaces to re-read, or None for a full observe."""
        if pending.full or self.cache is None or self.spec is None:
            return None
        containers = set(pending.containers)
        if spec is not self.spec:
            changed = cache.changed_containers(self.spec, spec)
            if changed is None:
                return None
            containers |= changed
        return containers

    def _reached(self, pending: Pending, spec: Spec, lock: clusteripam.Allocation | None) -> set[str] | None:
        """The containers a spec edit reaches (`session.reach`), when only they need planning: nothing
        but the edit is pending (a drift hint or a resync re-observes and plans the whole spec).
        Memory stands for the rest of the host, as in `Session`: our own applies advance it, and
        drift events or the resync replace it when someone else changed what we own."""
        if (
            pending.full
            or pending.host
            or pending.nft
            or pending.containers
            or pending.hosts
            or self.cache is None
            or self.spec is None
            or self.desired is None
            or spec is self.spec
            or lock != self.lock
        ):
            return None
        return reach(self.spec, spec)

    def _repairs(self, pending: Pending, spec: Spec, lock: clusteripam.Allocation | None) -> bool:
        """Whether drift hints alone are pending, against the spec and allocation last applied: the
        desired state is then the one in memory, and only what the hints name is read again and
        planned (`_plan_repair`). Specs whose drivers' host side depends on every member, or that
        name hosts, are planned whole."""
        return (
            not pending.full
            and spec is self.spec
            and lock == self.lock
            and self.cache is not None
            and self.desired is not None
            and not self._unapplied_spec
            and not spec.hosts
            and own_objects(spec)
        )

    def _converge(
        self,
        spec: Spec,
        lock: clusteripam.Allocation | None,
        containers: set[str] | None,
        part: set[str] | None,
        *,
        hints: Pending | None = None,
        dry_run: bool = False,
        rollback: bool = True,
    ) -> tuple[list[Action], list[str], str, list[str]]:
        """Plan `spec` and apply it (`dry_run`: plan only, remember nothing); the actions, the kinds
        of what they repaired, the mode and the apply's notices. `hints`: drift hints alone are
        pending (`_repairs`): only what they name is read again and planned."""
        scope = engine.scope_of(spec)
        if self._events is None:
            self._events = Events(scope, self._notify_drift)
            self._events.start()
        self._events.scope = scope
        state_dir = self.opts.state_dir
        previous = state_dir.load(scope)
        if previous != self._record:
            containers = part = hints = None  # another run changed the allocations: trust nothing remembered
        adopted = engine.adopted_of(spec, previous)
        if self._nft is None:
            self._nft = Nft()  # one libnftables context for the daemon's life
        nft = self._nft
        answer: Answered | None = None  # what this observation answers when it finds nothing to do
        changed: frozenset[str] | None = None  # a part's containers: the only ones whose names may change
        planned = None
        if part is not None and self.cache is not None and self.desired is not None:
            # When the rest's addresses cannot stay (ipam.Moved), the part's containers are read
            # again and the whole spec planned, below.
            with contextlib.suppress(ipam.Moved):
                planned = self._plan_part(spec, lock, part, previous, self.desired, adopted)
        # Planned from memory, only the part's namespaces are read (by the verification); a repair of
        # nft alone reads no namespace.
        if planned is not None or hints is None or not hints.tables_alone:
            self._follow(spec, adopted, None if planned is None else planned[4])
        looked = time.monotonic()
        if planned is not None and self.cache is not None:
            observed = self.cache  # memory: it answers no hint
            record, desired, actions, check, changed = planned
            mode = "partial"
        elif hints is not None and self.cache is not None and self.desired is not None:
            mode, record, desired, changed = "partial", previous, self.desired, frozenset()
            observed, actions, check, answer = self._plan_repair(spec, hints, adopted, looked)
        elif containers is None or self.cache is None:
            mode = "full"
            observed = observe(scope, adopted, nft)
            answer = Answered(looked)
            observed, record, desired, actions, check = self._plan_whole(
                spec, lock, observed, previous, None, adopted
            )
        else:
            mode = "partial"
            observed = cache.merge(self.cache, observe(scope, adopted, nft, containers), containers, adopted)
            answer = Answered(looked, frozenset(containers))
            observed, record, desired, actions, check = self._plan_whole(
                spec, lock, observed, previous, containers, adopted
            )
        if dry_run:
            return actions, [], mode, []
        notices: list[str] = []
        if actions or record != previous:
            self._verified = None
            if check is not None and not rollback:
                check = dataclasses.replace(check, rollback=False)
            notices = engine.commit(actions, scope, previous, record, state_dir, nft, check)
            answer = self._verified
            for notice in notices:
                self.log.message(notice)
        if actions or record != previous or not self._dns_published:
            # Nothing applied, nothing allocated: the records are the last ones (the supervisor
            # restarts a resolver that died).
            if changed is not None and self._dns_published:
                dns.after_part(state_dir, scope, spec, changed, record, desired)
            else:
                dns.after(state_dir, scope, spec, lock, record, desired)
            self._dns_published = True
        if answer is not None:
            self._answered = answer
        before = self.desired  # a drift repair's is the same object: every action repaired something
        repaired = [
            a.resource.kind
            for a in actions
            if before is desired
            or (before is not None and before.resources.get(k := a.resource.key) == desired.resources.get(k))
        ]
        advance(observed.state, actions)
        self.cache = observed
        self.spec, self.lock, self.desired, self._record = spec, lock, desired, record
        return actions, repaired, mode, notices

    def _plan_whole(
        self,
        spec: Spec,
        lock: clusteripam.Allocation | None,
        observed: Observed,
        previous: ScopeRecord,
        containers: set[str] | None,
        adopted: dict[str, str],
    ) -> tuple[Observed, ScopeRecord, State, list[Action], Verification]:
        """Plan the whole spec against `observed` (fresh, or memory with `containers` re-read, and more
        namespaces re-read when allocation reaches further: the observation planned against), and
        how to verify the apply: against the whole scope observed again, or, when only `containers`
        were read, against them read again over the same memory (what the apply could touch)."""
        scope, state_dir = engine.scope_of(spec), self.opts.state_dir
        assert self._nft is not None
        nft = self._nft

        def prepare(observed: Observed) -> tuple[ScopeRecord, State]:
            opts = self.opts
            return engine.prepare(
                spec, scope, previous, observed, state_dir, host=opts.host, lock=lock, key_file=opts.key_file
            )

        record, desired = prepare(observed)
        if containers is not None:
            # Allocation can reach past what the spec edit named (an address freed and reused).
            extra = cache.desired_changes(self.desired, desired) - containers
            if extra:
                fresh = observe(scope, adopted, nft, extra)
                observed = cache.merge(observed, fresh, extra, adopted)
                record, desired = prepare(observed)
        if containers is None:
            check = engine.verification(desired, observed.state, scope, adopted, nft)
            check = self._answering(check, spec, adopted, None, lambda: True)
        else:
            read, before = containers | extra, observed

            def again() -> State:
                return cache.merge(before, engine.observe_all(scope, adopted, nft, read), read, adopted).state

            check = Verification(desired, observed.state, again)
            check = self._answering(check, spec, adopted, frozenset(read), lambda: True)
        return observed, record, desired, plan(desired, observed.state), check

    def _plan_part(
        self,
        spec: Spec,
        lock: clusteripam.Allocation | None,
        part: set[str],
        previous: ScopeRecord,
        before: State,
        adopted: dict[str, str],
    ) -> tuple[ScopeRecord, State, list[Action], Verification | None, frozenset[str]]:
        """Plan only `part` of a spec edit against memory (`session.narrow`); the whole desired state
        is the last one with the part's resources replaced. The apply is verified on the part alone:
        its namespaces and the host read again, restricted to the resources the part's old and new
        desired states name (the rest of the host is not part of this desired state)."""
        assert self.spec is not None and self.cache is not None and self._nft is not None
        if not part:
            return previous, before, [], None, frozenset()
        scope = engine.scope_of(spec)
        narrowed = narrow(self.spec, spec, part, self.cache, previous)
        record, desired = engine.prepare(
            narrowed.spec,
            scope,
            previous,
            narrowed.observed,
            self.opts.state_dir,
            host=self.opts.host,
            lock=lock,
            keep=narrowed.keep,
            key_file=self.opts.key_file,
        )
        whole = State(dict(before.resources))  # a copy, then the part's few keys: not a filter of all
        for key in narrowed.old_keys:
            whole.resources.pop(key, None)
        whole.resources.update(desired.resources)
        keys, nft = narrowed.old_keys | desired.resources.keys(), self._nft
        actions = plan(desired, narrowed.observed.state)
        # What the actions can have changed, read again: the namespaces they name and the part's
        # hosts files (an add rewrites its network's), with the host's links and the nft elements
        # the actions add or remove, looked up one by one (our tables listed whole only when the
        # plan changes one); the part's other namespaces and nft objects are as memory has them.
        touched, files = engine.touched(actions), {k[1] for k in keys if k[0] == HostsFile.kind}
        links = _links(touched, desired, narrowed.observed.state)
        elements = [a.resource for a in actions if isinstance(a.resource, NftElement)]
        changed = {e.key for e in elements}
        memory = narrowed.observed.state.resources
        kept = [r for k in keys - changed if (r := memory.get(k)) is not None and r.kind in _NFT_KINDS]
        whole_tables = any(isinstance(a.resource, NftTable) for a in actions)
        host_in_sync = False

        def again() -> State:
            nonlocal host_in_sync
            fresh = engine.observe_all(
                scope,
                adopted,
                nft,
                touched,
                hosts=files,
                links=links,
                drivers=engine.part_drivers(spec),
                firewall=False,
            ).state
            found = None if whole_tables else observe_elements(nft, scope, elements)
            for resource in observe_firewall(nft, scope) if found is None else [*kept, *found]:
                fresh.add(resource)
            # When the host level read (all but the other hosts files and the other nft elements)
            # matches the whole desired state, this observation answers host-level hints too (our
            # bridge's echoes). Not nft hints: it read no other element (our own commits' nft events
            # are no hints, `Events`).
            host_in_sync = not plan(_seen(whole, files), _seen(fresh, files))
            return _only(engine.over(narrowed.observed.state, fresh, touched), keys)

        check = Verification(desired, narrowed.observed.state, again)
        follow = narrowed.containers
        check = self._answering(
            check,
            spec,
            adopted,
            frozenset(touched),
            lambda: host_in_sync,
            frozenset(files),
            False,
            follow=follow,
        )
        return record, whole, actions, check, narrowed.containers

    def _plan_repair(
        self, spec: Spec, hints: Pending, adopted: dict[str, str], looked: float
    ) -> tuple[Observed, list[Action], Verification, Answered]:
        """Drift hints alone (`_repairs`): what they name is read again (their namespaces, host veths
        and hosts files; the host's links whole after a host-level hint, our bridges and those veths
        by name otherwise, with the forwarding sysctls; our nft tables after an nft hint, and nothing
        else after nft hints alone) and planned against the desired state in memory, restricted to
        what was read; memory keeps the rest. The apply is verified on the same read. Returns the
        observation planned against (memory with the read merged in), the plan, its verification,
        and what the read answers when it finds nothing to do (`looked`: when it started)."""
        assert self.cache is not None and self.desired is not None and self._nft is not None
        scope, nft, memory = engine.scope_of(spec), self._nft, self.cache
        namespaces, files = set(hints.containers), set(hints.hosts)
        # Only the kinds the hints reach are read: a veth's repair does not list the 2,000 map
        # elements of our tables, a flushed table's reads no link.
        tables, linked = hints.nft, not hints.tables_alone
        links = None if hints.host or not linked else _links(namespaces, self.desired, memory.state)

        def read() -> State:
            if not linked:
                return State({r.key: r for r in observe_firewall(nft, scope)})
            observed = observe(
                scope,
                adopted,
                nft,
                namespaces,
                hosts=files,
                only_links=links,
                conflicts=False,
                firewall=tables,
            )
            return observed.state

        def covered(res: Resource) -> bool:
            if res.kind in _NFT_KINDS:
                return tables
            if not linked:
                return False
            container = container_of(res)
            if container is not None:
                return container in namespaces
            if isinstance(res, HostsFile):
                return res.container in files
            link = res.network_link()
            return links is None or link is None or link in links

        fresh = read()
        want = State({k: r for k, r in self.desired.resources.items() if covered(r)})
        merged = State({k: r for k, r in memory.state.resources.items() if not covered(r)})
        merged.resources.update(fresh.resources)
        check = Verification(want, fresh, read)
        # Verified, the read matched every host-level object of the desired state but the other
        # hosts files: it answers host-level hints too (the echoes of the repair's own changes).
        check = self._answering(
            check,
            spec,
            adopted,
            frozenset(namespaces),
            lambda: linked,
            frozenset(files),
            tables,
            namespaces=linked,
        )
        answer = Answered(looked, frozenset(namespaces), linked, frozenset(files), tables)
        return dataclasses.replace(memory, state=merged), plan(want, fresh), check, answer

    def _follow(self, spec: Spec, adopted: dict[str, str], only: frozenset[str] | None = None) -> None:
        """Before an observation: the event source attributes the events of every namespace of ours.
        `only`: the observation reads these containers' namespaces alone (a part's): the others'
        attribution stays as the last observation left it (a hint about one follows them all)."""
        assert self._events is not None
        containers = spec.containers if only is None else only
        namespaces = {names.netns_path(c): c for c in containers}
        namespaces.update((path, c) for path, c in adopted.items() if only is None or c in only)
        self._events.follow(namespaces, only)

    def _answering(
        self,
        check: Verification,
        spec: Spec,
        adopted: dict[str, str],
        containers: frozenset[str] | None,
        host_level: Callable[[], bool],
        hosts: frozenset[str] | None = None,
        nft: bool | None = None,
        *,
        namespaces: bool = True,
        follow: frozenset[str] | None = None,
    ) -> Verification:
        """`check`, remembering (in `_verified`) when its last observation started and what it
        compared (`host_level()`: whether the host level matched, asked after it was observed;
        `hosts`: whose hosts files, `nft`: whether our nft tables (None: with the host level), as
        `Answered`): once the apply is verified, that observation answers the hints read before it.
        `namespaces=False`: the observation reads none (nor are their ids looked up again);
        `follow`: the only containers whose namespaces it reads, as `_follow`."""
        observe_again = check.observe

        def observe_answering() -> State:
            if namespaces:
                self._follow(spec, adopted, follow)
            assert self._events is not None
            # The apply's own events, read before `at`, are then answered by this observation.
            self._events.catch_up()
            at = time.monotonic()
            state = observe_again()
            self._verified = Answered(at, containers, host_level(), hosts, nft)
            return state

        return dataclasses.replace(check, observe=observe_answering)

    def _report(
        self, r: Reconciled, repaired: list[str] | None = None, *, scope_spec: Spec | None, attempt: bool
    ) -> None:
        self.log.reconciled(r)
        managed = self.cache.state if self.cache is not None else None
        self.metrics.record(r, repaired or [], managed, time.time())
        scope = engine.scope_of(scope_spec) if scope_spec else ""
        self.tracker.reconciled(r, scope, repaired=bool(repaired), attempt=attempt)


_NFT_KINDS = (NftTable.kind, NftElement.kind)


def _links(touched: set[str], *states: State) -> set[str]:
    """The host links a part's verification reads: the networks' bridges, the touched containers'
    veths (wanted or found)."""
    out = set()
    for state in states:
        for r in state.resources.values():
            if isinstance(r, Bridge):
                out.add(r.ifname)
            elif isinstance(r, Iface) and r.container in touched and r.host_ifname:
                out.add(r.host_ifname)
    return out


def _seen(state: State, hosts: set[str]) -> State:
    """The host level, but for the hosts files of containers other than `hosts` and the nft elements."""
    return State(
        {
            k: r
            for k, r in state.resources.items()
            if k[0] not in cache.NAMESPACE_KINDS
            and k[0] != NftElement.kind
            and (k[0] != HostsFile.kind or k[1] in hosts)
        }
    )


def _only(state: State, keys: frozenset[Key]) -> State:
    return State({k: r for k, r in state.resources.items() if k in keys})


def run(options: Options) -> int:
    engine.require_privileges()
    return Daemon(options).run()
