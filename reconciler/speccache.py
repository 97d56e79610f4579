"""The compiled-spec cache: what an apply made of a spec (the record, the desired state, what the
conflict checks need of the spec), kept for the next apply of the same spec on this host.

Reading a spec (YAML with line numbers, pydantic) and compiling it (IPAM, the desired state) is most
of a no-op apply's own work besides observing. Both are pure functions of inputs that are cheap to
compare: the spec files' bytes, its lock files, the options that feed the desired state (`--host`,
`--key-file`, `--advertise`), this code, every scope's record and, of the host, the prefixes IPAM
must avoid. When all are as a successful run left them, the apply takes the compiled spec from here.
It still observes the whole host and plans against that, as always, and runs every conflict check
again on the fresh observation: the cache saves the compiling, never the observing, so every drift
is still seen and repaired.

Only specs whose networks' drivers say their desired state reads nothing of the host (`compiled_alone`:
the bridge driver) are kept: a macvlan network's reads its parent's MTU and the host's links, an
overlay's the host's addresses, the cluster allocation, a lock file or a store.

One entry per spec path in STATE_DIR/cache/ (0700), a 0600 file written by rename. It is a pickle
(the desired state is some twelve thousand model objects at N=1,000: a pickle loads them several
times faster than JSON and a constructor per kind would), so it is read only when this user owns it
and nobody else may write it, and only after its digest matched: one that is unreadable, corrupt,
foreign or stale is a miss, never an error.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pickle
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import engine
from .client import read_files
from .scopes import Claims
from .statedir import ScopeRecord, StateDir

if TYPE_CHECKING:
    from .drivers.overlay.clusteripam import Allocation
    from .nft import Nft
    from .observe import Observed
    from .spec import Spec

FORMAT = b"netreconciler compiled spec 1\n"
DIR = "cache"


@dataclass
class Options:
    """What of the command line feeds the desired state, beside the spec."""

    host: str | None
    key_file: str
    advertise: str | None


@dataclass
class Entry:
    key: str
    compiled: engine.Compiled
    declared: dict[str, str]  # the spec's adopted namespaces: path -> container
    others: dict[str, ScopeRecord]  # the other scopes' records it was compiled against
    claims: Claims
    dns_records: Any  # what the resolver serves for the scope (dns/records.py)


def spec_key(spec_path: str, options: Options) -> str | None:
    """The digest of everything of the spec's side that feeds its compiled form; None when the files
    cannot be read as the loader reads them (the load reports why)."""
    files = read_files(spec_path)
    if files is None:
        return None
    from .drivers.overlay.clusteripam import lock_files

    h = hashlib.sha256(FORMAT + _code_digest())
    h.update(
        repr((os.path.abspath(spec_path), files, options.host, options.key_file, options.advertise)).encode()
    )
    for lock in lock_files(spec_path):
        try:
            h.update(repr((str(lock), lock.read_bytes())).encode())
        except FileNotFoundError:
            h.update(repr((str(lock), None)).encode())
        except OSError:
            return None
    return h.hexdigest()


@functools.cache
def _code_digest() -> bytes:
    """This code's version: the interpreter's, and every module's size and modification time (an
    upgrade or a checkout changes them)."""
    root = Path(__file__).parent
    stamps: list[object] = [sys.version]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(f for f in filenames if f.endswith(".py")):
            st = os.stat(os.path.join(dirpath, name))
            stamps.append((os.path.relpath(os.path.join(dirpath, name), root), st.st_size, st.st_mtime_ns))
    return hashlib.sha256(repr(stamps).encode()).digest()


def cacheable(spec: Spec, lock: Allocation | None, options: Options) -> bool:
    """A spec whose compiled form depends on nothing of the host but the prefixes in use (see above)."""
    from .drivers.registry import driver_of

    plain = spec.cluster is None and not spec.hosts and not spec.services and lock is None
    return plain and options.host is None and all(driver_of(n).compiled_alone for n in spec.networks.values())


def _file(state_dir: StateDir, spec_path: str) -> Path:
    name = hashlib.sha256(os.path.abspath(spec_path).encode()).hexdigest()[:32]
    return state_dir.path / DIR / name


def load(state_dir: StateDir, spec_path: str, key: str) -> Entry | None:
    """The entry for `key`, or None (missing, unreadable, not ours alone, corrupt, another key)."""
    path = _file(state_dir, spec_path)
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                return None
            data = f.read()
    except OSError:
        return None
    # The key comes before the payload: an entry of other inputs or other code is never unpickled.
    head = _head(key)
    digest, payload = data[len(head) : len(head) + 32], data[len(head) + 32 :]
    if not data.startswith(head) or hashlib.sha256(payload).digest() != digest:
        return None
    try:
        entry = pickle.loads(payload)
    except Exception:  # whatever a damaged pickle raises is a miss
        return None
    return entry if isinstance(entry, Entry) and entry.key == key else None


def _head(key: str) -> bytes:
    return FORMAT + key.encode() + b"\n"


def save(state_dir: StateDir, spec_path: str, entry: Entry) -> None:
    """Write by rename; a cache that cannot be written is no error (the next run compiles again)."""
    payload = pickle.dumps(entry, protocol=pickle.HIGHEST_PROTOCOL)
    path = _file(state_dir, spec_path)
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(OSError):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "wb") as f:
            f.write(_head(entry.key) + hashlib.sha256(payload).digest() + payload)
        os.replace(tmp, path)


def forget(state_dir: StateDir, spec_path: str) -> None:
    """After a destroy: the spec's entry goes, and with the last scope's record the whole cache (a
    destroyed host keeps nothing of ours in the state directory but its lock)."""
    with contextlib.suppress(OSError):
        _file(state_dir, spec_path).unlink()
    if not state_dir.scopes():
        folder = state_dir.path / DIR
        with contextlib.suppress(OSError):
            for file in folder.iterdir():  # entries only: the folder is ours alone
                file.unlink()
            folder.rmdir()


def entry_of(key: str, spec: Spec, lock: Allocation | None, compiled: engine.Compiled) -> Entry:
    """What to keep of a successful run of `spec` that compiled it (`compiled`)."""
    from .dns.records import scope_records, service_vips
    from .scopes import claims

    declared = {ctr.netns: c for c, ctr in spec.containers.items() if ctr.netns}
    records = scope_records(spec, compiled.record, compiled.desired, service_vips(spec, lock))
    return Entry(key, compiled, declared, compiled.others, claims(spec), records)


def apply(
    state_dir: StateDir,
    entry: Entry,
    *,
    dry_run: bool,
    rollback: bool,
    recompile: Callable[[Observed, Nft], engine.Outcome],
) -> engine.Outcome | None:
    """`engine.reconcile` with the compiled spec of `entry`, or None when the records changed since it
    was made (the caller compiles the spec). When the host's prefixes in use changed, `recompile`
    plans on the same observation (IPAM may choose otherwise). The caller has checked privileges."""
    scope = entry.compiled.scope
    with state_dir.lock():
        previous = state_dir.load(scope)
        others = state_dir.others(scope)
        if previous != entry.compiled.record or others != entry.others:
            return None
        adopted = engine.adopted_in(previous, entry.declared)
        observed, nft = engine.observe_scope(scope, adopted, state_dir, dry_run)
        if [str(p) for p in engine.in_use(observed, others)] != entry.compiled.in_use:
            return recompile(observed, nft)
        engine.observe_stages(scope, observed)
        compiled = engine.Compiled(
            scope, adopted, previous, entry.compiled.desired, entry.compiled.in_use, others
        )
        problems = engine.scope_conflicts(entry.claims, previous, observed, others)
        # The stages of a spec of `compiled_alone` networks check nothing: the rest of `prepare`'s checks.
        engine.refuse(
            problems
            + engine.host_conflicts(compiled.desired, observed)
            + engine.forwarding_conflicts(compiled.desired, observed)
        )

        def publish() -> None:
            from .dns.supervise import publish

            publish(state_dir.path, scope, entry.dns_records)

        return engine.settle(compiled, previous, state_dir, observed, nft, dry_run, rollback, publish)
