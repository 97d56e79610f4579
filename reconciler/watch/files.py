"""Spec (and lock) file changes, from inotify through watchfiles, in a thread of their own.

A file is watched through its directory: editors and `git checkout` replace files by rename, which a
watch on the file itself would lose. Bursts (a checkout touching several files) are grouped by
watchfiles until no change has come for `settle_ms`, so one checkout is one reconcile.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import watchfiles

from .sources import is_spec_file


def watch_specs(path: Path, settle_ms: int, notify: Callable[[], None]) -> threading.Thread:
    """Start a thread calling `notify` after each settled burst of changes to PATH's spec files."""
    directory = path if path.is_dir() else path.parent
    target = None if path.is_dir() else path.name

    def relevant(_: watchfiles.Change, changed: str) -> bool:
        p = Path(changed)
        if p.parent != directory or p.name.startswith("."):
            return False
        # The lock files pin overlay addresses: editing one is editing the spec.
        if target:
            return p.name in (target, f"{target}.lock")
        return is_spec_file(p) or p.suffix == ".lock"

    def run() -> None:
        # rust_timeout=0: block in inotify without waking up; the thread dies with the process.
        for _ in watchfiles.watch(
            directory, watch_filter=relevant, step=settle_ms, recursive=False, rust_timeout=0
        ):
            notify()

    thread = threading.Thread(target=run, name="spec-files", daemon=True)
    thread.start()
    return thread
