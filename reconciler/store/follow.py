"""The daemon's two store threads: the watch that keeps the view current, and the lease's keepalive.

The watch lists the prefix once, then follows it from the revision after the listing, so nothing
between the two is lost; when the stream breaks (a member stopped, every member stopped) it resumes
from the last revision it saw through whichever member answers, and when that revision has been
compacted away it lists again (flannel's registry does the same). The threads only report: the view
changed, or the store's health did; the daemon's loop decides what to do with it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..spec import ClusterStore
from .client import Client, StoreUnavailable, StreamEnded, entry, unb64
from .model import Keys, View

BACKOFF_FIRST = 0.25
BACKOFF_MAX = 4.0


class Follower:
    def __init__(
        self,
        config: ClusterStore,
        keys: Keys,
        lease: Callable[[], int],
        on_change: Callable[[], None],
        on_health: Callable[[bool, str], None],
        log: Callable[[str], None],
    ) -> None:
        # A client per thread: the watch stream holds its connection for as long as it lasts.
        self._watch_client = Client(config)
        self._lease_client = Client(config)
        self.keys, self.ttl = keys, config.ttl
        self._lease = lease
        self._on_change, self._on_health, self._log = on_change, on_health, log
        self._lock = threading.Lock()
        self._view: View | None = None
        self._health = {"watch": True, "lease": True}
        self._error = ""
        self._stopped = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._watch, name="store-watch", daemon=True).start()
        threading.Thread(target=self._keepalive, name="store-lease", daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()

    def snapshot(self) -> View | None:
        """A copy of the view, or None before the first listing."""
        with self._lock:
            view = self._view
            # Entries are immutable: a copy of the mapping is a copy of the view.
            return View(view.keys, dict(view.entries), view.revision) if view is not None else None

    @property
    def up(self) -> bool:
        with self._lock:
            return all(self._health.values())

    def _report(self, part: str, ok: bool, error: str = "") -> None:
        with self._lock:
            was = all(self._health.values())
            self._health[part] = ok
            now = all(self._health.values())
            if error:
                self._error = error
        if was != now:
            self._on_health(now, "" if now else error or self._error)

    def _watch(self) -> None:
        backoff = BACKOFF_FIRST
        self._revision: int | None = None
        while not self._stopped.is_set():
            try:
                if self._revision is None:
                    self._revision = self._relist()
                self._follow()
            except StreamEnded:
                continue  # resumed at once from the revision seen last; a failure to reopen is reported
            except StoreUnavailable as e:
                self._report("watch", False, str(e))
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    def _relist(self) -> int:
        entries, revision = self._watch_client.range(self.keys.root)
        with self._lock:
            self._view = View(self.keys, {e.key: e for e in entries}, revision)
        self._report("watch", True)
        self._on_change()
        return revision

    def _follow(self) -> None:
        """Follow the stream from the revision after the one seen last, until it ends (StreamEnded);
        when the history it needs was compacted, forget the revision (list again)."""
        assert self._revision is not None
        for result in self._watch_client.watch(self.keys.root, self._revision + 1):
            if int(result.get("compact_revision", 0) or 0) > 0 or result.get("canceled"):
                self._log(f"store: history compacted past revision {self._revision}: listing again")
                self._revision = None
                return
            self._report("watch", True)
            events = result.get("events", [])
            if events:
                self._apply(events)
                self._revision = int(result["header"]["revision"])
                self._on_change()
            if self._stopped.is_set():
                return

    def _apply(self, events: list[dict[str, Any]]) -> None:
        with self._lock:
            view = self._view
            assert view is not None
            for event in events:
                kv = event["kv"]
                if event.get("type") == "DELETE":
                    view.entries.pop(unb64(kv["key"]), None)
                else:
                    e = entry(kv)
                    view.entries[e.key] = e
                view.revision = max(view.revision, int(kv.get("mod_revision", 0)))

    def _keepalive(self) -> None:
        """Refresh the lease three times per TTL: one missed refresh is not an expiry, nor an outage
        (a leader election after a member stopped takes about that long)."""
        missed = 0
        while not self._stopped.wait(max(self.ttl / 3, 0.5)):
            lease = self._lease()
            if not lease:
                continue
            try:
                ttl = self._lease_client.keepalive(lease)
            except StoreUnavailable as e:
                missed += 1
                if missed > 1:
                    self._report("lease", False, str(e))
                continue
            missed = 0
            self._report("lease", True)
            if ttl <= 0:
                # Expired (the store was away longer than the TTL): everything under it is gone;
                # the next reconcile registers again and claims its addresses anew.
                self._on_change()
