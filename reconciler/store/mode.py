"""etcd mode for `watch` and `apply`: each reconcile turns this host's spec into the cluster's.

Per reconcile: register (keep the lease), claim what the spec needs (names, addresses, network
definitions), then resolve the view into a cluster spec and its allocation for the overlay driver.
With the store unreachable nothing is claimed and nothing is forgotten: the last view stands, so the
data plane stays as last programmed (remote endpoints are never removed because the store cannot be
read), edits that need no new address still apply, and what does need one waits for the store.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from ..drivers.overlay.clusteripam import Allocation
from ..errors import Problem, ReconcilerError, SpecError
from ..spec import ClusterStore, Spec
from ..statedir import ScopeRecord
from .client import StoreUnavailable
from .etcd import Store, StoreConflict
from .follow import Follower
from .model import View
from .resolve import Resolved, StoreWaiting, resolve

STATUS_FILE = "store-{scope}.json"
RETRY_FIRST, RETRY_MAX = 0.5, 8.0


def default_advertise(config: ClusterStore) -> str:
    """The source address of this host's route towards the first endpoint (no packet is sent)."""
    parts = urlsplit(config.endpoints[0])
    host, port = (parts.hostname or "").strip("[]"), parts.port or 2379
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, port))
            address: str = s.getsockname()[0]
    except OSError as e:
        raise ReconcilerError(
            f"no route towards the etcd endpoint {config.endpoints[0]} to take --advertise from: {e}; "
            "pass --advertise ADDRESS"
        ) from e
    return address


class EtcdMode:
    def __init__(
        self,
        config: ClusterStore,
        scope: str,
        host: str,
        advertise: str,
        log: Callable[[str], None],
        status_dir: Path | None = None,
        public_key: str | None = None,
    ) -> None:
        self.config, self.scope, self.host, self.vtep = config, scope, host, advertise
        self.store = Store(config, scope, host, advertise, public_key)
        self.log = log
        self.up = True
        self._sources = {"follower": True, "claims": True}
        self.error = ""
        self.since = time.time()
        self._status_dir = status_dir
        self._follower: Follower | None = None
        self._retry: Callable[[], None] | None = None
        self._on_health: Callable[[bool], None] = lambda up: None
        self._backoff = RETRY_FIRST
        self._last: View | None = None
        self._said: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())

    def follow(self, on_change: Callable[[], None], on_health: Callable[[bool], None]) -> None:
        """Watch the store from threads (the daemon): `on_change` when the view changed."""

        def health(up: bool, error: str) -> None:
            self._health("follower", up, error)
            on_change()  # back up: catch up now; down: the view stands, nothing to do but report

        self._follower = Follower(
            self.config, self.store.keys, lambda: self.store.lease, on_change, health, self.log
        )
        self._follower.start()
        self._retry = on_change
        self._on_health = on_health

    def resolve(
        self, local: Spec, previous: ScopeRecord, spec_path: Path, claim: bool = True
    ) -> tuple[Spec, Allocation]:
        """This host's spec -> (cluster spec, allocation); StoreConflict (as a located SpecError)
        for what the store refuses, StoreWaiting before the store was ever read. Without `claim`
        (a dry run) the store is only read: what has no address yet waits."""
        try:
            if claim:
                self._claim(local, previous)
            else:
                self._last = self.store.relist()
        except StoreConflict as e:
            raise located(spec_path, e.conflicts) from e
        except StoreUnavailable as e:
            self._health("claims", False, str(e))
            self._schedule_retry()
            if self._follower is not None:
                self._last = self._follower.snapshot() or self._last
            if self._last is None:
                raise StoreWaiting(f"waiting for the store: {e}") from e
        else:
            self._health("claims", True, "")
            self._backoff = RETRY_FIRST
        if self._status_dir is not None and not self._status_dir.joinpath(self._status_name).exists():
            self._write_status()
        assert self._last is not None
        resolved = resolve(local, self._last, self.host)
        self._tell(resolved)
        return resolved.spec, resolved.allocation

    def _claim(self, local: Spec, previous: ScopeRecord) -> None:
        if self._follower is not None and not self._sources["follower"]:
            # The threads see no member: do not hold the loop (and drift repair) on timeouts.
            raise StoreUnavailable(self.error or "etcd unreachable")
        view = self._follower.snapshot() if self._follower is not None else None
        if view is None:
            view = self.store.relist()
        self.store.view = view
        self.store.register()
        self.store.claim(local, _addresses(previous))
        self._last = self.store.view if self._follower is not None else self.store.relist()

    def _schedule_retry(self) -> None:
        """Claims that found no member are tried again, each wait twice the last (the watch only
        reports changes of the view, and a leader election changes none)."""
        if self._retry is None:
            return
        timer = threading.Timer(self._backoff, self._retry)
        timer.daemon = True
        timer.start()
        self._backoff = min(self._backoff * 2, RETRY_MAX)

    def _health(self, source: str, ok: bool, error: str) -> None:
        """The store is up while both the daemon's threads (watch, keepalive) and this host's own
        requests get answers; a change of the two together is logged and written for `show`."""
        self._sources[source] = ok
        up = all(self._sources.values())
        if up == self.up:
            return
        self.up, self.error, self.since = up, error if not up else "", time.time()
        if up:
            self.log(f"store: etcd reachable again through {self.store.client.endpoint}: catching up")
        else:
            self.log(f"store: {error}; the data plane stays as last programmed, retrying with backoff")
        self._write_status()
        self._on_health(up)

    def _tell(self, resolved: Resolved) -> None:
        said = (tuple(resolved.waiting), tuple(resolved.missing))
        if said == self._said:
            return
        self._said = said
        if resolved.waiting:
            self.log(f"store: waiting for an address from the store: {', '.join(resolved.waiting)}")
        if resolved.missing:
            self.log(f"store: not running on any host: {', '.join(resolved.missing)}")

    def status(self) -> dict[str, object]:
        return {
            "store": "etcd",
            "up": self.up,
            "since": self.since,
            "error": self.error or None,
            "endpoint": self.store.client.endpoint,
            "host": self.host,
            "advertise": self.vtep,
            "lease": self.store.lease,
        }

    @property
    def _status_name(self) -> str:
        return STATUS_FILE.format(scope=self.scope)

    def _write_status(self) -> None:
        if self._status_dir is None:
            return
        path = self._status_dir / self._status_name
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.status(), sort_keys=True))
        tmp.replace(path)


def read_status(status_dir: Path, scope: str) -> dict[str, object] | None:
    try:
        data: dict[str, object] = json.loads((status_dir / STATUS_FILE.format(scope=scope)).read_text())
    except (OSError, ValueError):
        return None
    return data


def _addresses(previous: ScopeRecord) -> dict[tuple[str, str], str]:
    """The addresses this host's containers had (the state record): claimed again first, so a
    container keeps its address across a restart that outlived its lease."""
    return {(n, c): a for n, r in previous.networks.items() for c, a in r.addresses.items()}


def located(spec_path: Path, problems: list[Problem]) -> SpecError:
    """Store refusals at their place in the spec's files (FILE:LINE: field.path: message)."""
    from ..specload import parse_spec_data, read_spec_text
    from ..watch.sources import merge, spec_files

    parts = [parse_spec_data(read_spec_text(f), str(f)) for f in spec_files(spec_path)]
    _, locate, _ = merge(parts)
    return SpecError([Problem(p.path, p.message, *locate(p.path)) for p in problems])
