"""What the daemon reports about its sources and scopes: the applied and the attempted revision,
fetches, suspension and the times of the last sync and drift repair. The same facts go to the
status file (`reconciler status`), the metrics and the log."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from . import status
from .gitremote import redact
from .report import Log, Reconciled

if TYPE_CHECKING:
    from .daemon import Options
    from .metrics import Metrics

OK_RESULTS = ("applied", "in_sync")


class Tracker:
    def __init__(self, options: Options, log: Log, metrics: Metrics) -> None:
        self.opts = options
        self.log = log
        self.metrics = metrics
        self.checked_out = ""  # the revision in the checkout (the next spec read comes from it)
        self.refused = ""  # the last tip refused for its signature (not fetched again and again)
        self._scopes: dict[str, dict[str, Any]] = {}
        self._fetch: dict[str, Any] = {}
        self._suspended: str | None = None
        self._held = ""
        self._last_pass: float = 0.0
        self._lock_fd = -1

    @property
    def source(self) -> str:
        git = self.opts.git
        if git is None:
            return str(self.opts.path)
        return f"{redact(git.url)} branch {git.branch} path {git.path or '.'}"

    def start(self) -> None:
        self._lock_fd = status.hold_daemon_lock(self.opts.state_dir.path)
        previous = status.read_status(self.opts.state_dir.path) or {}
        if previous.get("source") == self._source():
            # What the host runs is what the last run applied, until this one applies something.
            self._scopes = previous.get("scopes") or {}
        self.suspension()

    def previously_applied(self) -> str | None:
        """The revision the last run applied (one scope: one spec per daemon), if it said so."""
        revisions = {e.get("applied_revision") for e in self._scopes.values()} - {None}
        return revisions.pop() if len(revisions) == 1 else None

    def relative(self, problems: list[str]) -> list[str]:
        """Problems in a checkout name their file inside the repository, as its author knows it."""
        git = self.opts.git
        if git is None:
            return problems
        prefix = f"{git.clone}/"
        return [p.removeprefix(prefix) for p in problems]

    def suspension(self) -> str | None:
        level = status.suspended(self.opts.state_dir.path)
        if level != self._suspended:
            self.log.message(f"suspended: {level}" if level else "resumed")
            for each in status.SUSPEND_LEVELS:
                self.metrics.suspended.labels(each).set(1 if each == level else 0)
            self._suspended = level
            self._held = ""
            self._write()
        return level

    def hold(self, what: str) -> None:
        """Say once per suspension and revision that `what` waits for `reconciler resume`."""
        if what != self._held:
            self._held = what
            self.log.message(f"suspended: holding {what} until `reconciler resume`")

    def fetched(self, revision: str | None, error: str | None) -> None:
        now = time.time()
        was = self._fetch.get("error")
        if error is None:
            self._fetch.update(revision=revision, last_success=now, error=None)
            self.metrics.last_fetch.set(now)
            if was:
                self.log.event("fetch", f"fetch ok again: {revision}", result="ok", revision=revision)
        else:
            self._fetch.update(error=error, last_failure=now)
            self.metrics.fetch_failures.inc()
            if error != was:  # once per distinct failure, not every interval
                self.log.event(
                    "fetch",
                    f"fetch failed (degraded, nothing torn down): {error}",
                    result="failed",
                    error=error,
                )
        self._write()

    def refuse(self, revision: str, error: str, scope: str) -> None:
        self.refused = revision
        self.log.event("refused_revision", f"refused {revision}: {error}", revision=revision, error=error)
        self._attempt(scope, revision, "refused", error)
        self._write()

    def reconciled(self, r: Reconciled, scope: str, *, repaired: bool, attempt: bool) -> None:
        """`attempt`: it tried a new spec (revision); otherwise it kept the applied one (drift repair,
        resync), which says nothing about the last attempted revision."""
        said = "\n".join(r.problems) if r.problems else r.error
        error = said if r.result not in OK_RESULTS else None
        entry = self._entry(scope)
        if attempt:
            self._attempt(scope, r.revision, r.result, error)
        entry.update(last_result=r.result, last_error=error)
        now = time.time()
        if r.result in OK_RESULTS:
            entry["applied_revision"] = r.revision or None
            entry["last_sync"] = now
            if r.revision:
                self.metrics.info("applied_revision", scope, r.revision)
        if repaired:
            entry["last_drift_repair"] = now
        self._write()

    def passed(self, started: float | None) -> None:
        if started is not None:
            self._last_pass = started
            self._write()

    def _entry(self, scope: str) -> dict[str, Any]:
        empty = dict.fromkeys(("applied_revision", "attempted_revision", "result", "error"))
        return self._scopes.setdefault(scope, {**empty, "last_sync": None, "last_drift_repair": None})

    def _attempt(self, scope: str, revision: str, result: str, error: str | None) -> None:
        self._entry(scope).update(
            attempted_revision=revision or None, result=result, error=error, last_attempt=time.time()
        )
        if revision:
            self.metrics.info("attempted_revision", scope, revision, result)

    def _source(self) -> dict[str, str]:
        git = self.opts.git
        if git is None:
            return {"path": str(self.opts.path)}
        return {"git": redact(git.url), "branch": git.branch, "path": git.path or "."}

    def _write(self) -> None:
        if self._lock_fd < 0:
            return  # not started: another daemon may own the status file
        git = self.opts.git
        data: dict[str, Any] = {
            "pid": os.getpid(),
            "source": self._source(),
            "fetch_interval": self.opts.fetch_interval if git else None,
            "suspended": self._suspended,
            "scopes": self._scopes,
            "last_pass": self._last_pass,
        }
        if git is not None:
            data["fetch"] = self._fetch
        status.write_status(self.opts.state_dir.path, data)
