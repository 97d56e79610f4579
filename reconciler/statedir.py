"""The state directory: IPAM records per scope and the lock that serializes runs.

The lock is an flock on a file, so it dies with its holder: a killed run never leaves a stale lock.
Records are written by rename, so a crash leaves either the old or the new file, never half of one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import ipaddress
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LockBusy, ReconcilerError

DEFAULT_STATE_DIR = "/var/lib/reconciler"
LOCK_WAIT = float(os.environ.get("RECONCILER_LOCK_WAIT", "60"))


@dataclass
class NetworkRecord:
    subnet: str  # IPv4; "" on an IPv6-only network
    addresses: dict[str, str] = field(default_factory=dict)  # container -> address
    # A macvlan network's parent (its L2 segment): other scopes may reuse the subnet on another one.
    parent: str = ""
    subnet6: str = ""  # "" on a network without IPv6
    addresses6: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"subnet": self.subnet, "addresses": self.addresses}
        if self.parent:
            out["parent"] = self.parent
        # Only when set: an IPv4-only record reads as it did before IPv6, and old records load as such.
        if self.subnet6:
            out["subnet6"] = self.subnet6
            out["addresses6"] = self.addresses6
        return out

    def prefixes(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [_prefix(s) for s in (self.subnet, self.subnet6) if s]


@functools.lru_cache(maxsize=4096)
def _prefix(subnet: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A subnet parsed once: an apply asks every record's prefixes five times (about 20 us each);
    networks are immutable, so one object serves every caller."""
    return ipaddress.ip_network(subnet)


@dataclass
class ScopeRecord:
    networks: dict[str, NetworkRecord] = field(default_factory=dict)
    adopted: dict[str, str] = field(default_factory=dict)  # container -> netns path

    def to_json(self) -> dict[str, object]:
        return {
            "networks": {n: r.to_json() for n, r in self.networks.items()},
            "adopted": self.adopted,
        }

    def copy(self) -> ScopeRecord:
        """A copy whose maps can change without changing this one's."""
        return ScopeRecord(
            {
                n: dataclasses.replace(r, addresses=dict(r.addresses), addresses6=dict(r.addresses6))
                for n, r in self.networks.items()
            },
            dict(self.adopted),
        )

    @classmethod
    def from_json(cls, data: dict[str, object]) -> ScopeRecord:
        nets = data.get("networks", {})
        adopted = data.get("adopted", {})
        assert isinstance(nets, dict) and isinstance(adopted, dict)
        return cls(
            networks={
                n: NetworkRecord(
                    r["subnet"],
                    dict(r.get("addresses", {})),
                    r.get("parent", ""),
                    r.get("subnet6", ""),
                    dict(r.get("addresses6", {})),
                )
                for n, r in nets.items()
            },
            adopted=dict(adopted),
        )


class StateDir:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        # scope -> its file's bytes and their record, as this object last read or wrote them: a
        # load that finds the same bytes copies the record instead of parsing 1,000 addresses again
        # (an in-process apply loads its scope's record three times). Any other writer's rename
        # leaves other bytes, so the check is the file's content, not its time or inode.
        self._known: dict[str, tuple[bytes, ScopeRecord]] = {}

    def _file(self, scope: str) -> Path:
        return self.path / f"{scope}.json"

    @contextlib.contextmanager
    def lock(self, wait: float = LOCK_WAIT, holder: str = "") -> Iterator[None]:
        """Hold the state lock; while another run holds it, say so once and wait up to `wait` seconds.
        `holder` names this run to the others that wait (e.g. "reconciler watch")."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ReconcilerError(f"cannot use state directory {self.path}: {e.strerror}") from e
        try:
            self._acquire(fd, wait)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {holder}".strip().encode() + b"\n", 0)
            yield
        finally:
            os.close(fd)

    def _acquire(self, fd: int, wait: float) -> None:
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pid, _, name = os.pread(fd, 64, 0).decode(errors="replace").strip().partition(" ")
                who = f"{pid or '?'}, {name}" if name else pid or "?"
                if time.monotonic() >= deadline:
                    raise LockBusy(
                        f"another reconciler run (pid {who}) still holds {self.path / 'lock'} "
                        f"after {wait:g} s; try again when it ends"
                    ) from None
                if not told:
                    print(f"waiting for another reconciler run (pid {who}) to finish...", file=sys.stderr)
                    told = True
                time.sleep(0.05)

    def load(self, scope: str) -> ScopeRecord:
        try:
            raw = self._file(scope).read_bytes()
            known = self._known.get(scope)
            if known is not None and known[0] == raw:
                return known[1].copy()
            record = ScopeRecord.from_json(json.loads(raw))
        except FileNotFoundError:
            return ScopeRecord()
        except (OSError, ValueError) as e:
            raise ReconcilerError(f"state file {self._file(scope)} is unreadable: {e}") from e
        self._known[scope] = (raw, record.copy())
        return record

    def others(self, scope: str) -> dict[str, ScopeRecord]:
        """Every other scope's records: their subnets are taken even when this spec does not list them."""
        if not self.path.is_dir():
            return {}
        return {p.stem: self.load(p.stem) for p in sorted(self.path.glob("*.json")) if p.stem != scope}

    def scopes(self) -> list[str]:
        """The scopes that have a record here."""
        return sorted(p.stem for p in self.path.glob("*.json")) if self.path.is_dir() else []

    def save(self, scope: str, record: ScopeRecord) -> None:
        self._known.pop(scope, None)  # a save that fails leaves the file unknown
        raw = write_json(self._file(scope), record.to_json())
        self._known[scope] = (raw, record.copy())

    def remove(self, scope: str) -> None:
        self._known.pop(scope, None)
        with contextlib.suppress(FileNotFoundError):
            self._file(scope).unlink()


def write_json(path: Path, data: object) -> bytes:
    """Write by rename after fsync: a crash leaves the old file or the new one, never half of one.
    Returns the bytes written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # One string, compact: only `dumps` without indent uses json's C encoder (`dump` to a file
    # encodes in Python, 10x slower at 1,000 containers).
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    with open(tmp, "wb") as f:
        f.write(raw)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return raw
