"""How `reconciler status`, `sync`, `suspend` and `resume` reach the daemon: files in the state
directory's `watch/` folder and signals to the pid recorded there.

- `daemon.pid`: the daemon holds an flock on it for its whole life, so "is it running" is answered
  by the lock (which dies with the process), never by a pid that may have been reused.
- `status.json`: what the daemon last did, replaced by rename after every reconcile and fetch.
- `suspended`: written by `suspend` (`revisions`, or `all` with --all), removed by `resume`; the
  daemon reads it before each fetch and reconcile, so it holds across restarts, as Flux's does.
`sync`, `suspend` and `resume` then send SIGHUP: fetch now and reconcile the whole scope.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from ..errors import ReconcilerError

FOLDER = "watch"
SUSPEND_LEVELS = ("revisions", "all")


def folder(state_dir: Path) -> Path:
    return state_dir / FOLDER


def hold_daemon_lock(state_dir: Path) -> int:
    """Take the daemon's lock (kept until the process ends); refuse a second daemon."""
    path = folder(state_dir) / "daemon.pid"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise ReconcilerError(f"cannot use state directory {state_dir}: {e.strerror}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise ReconcilerError(
            f"another reconciler watch (pid {pid}) already runs on {state_dir} (one per state directory)"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def running_pid(state_dir: Path) -> int | None:
    """The daemon's pid while one holds the lock, else None."""
    path = folder(state_dir) / "daemon.pid"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def write_status(state_dir: Path, data: dict[str, Any]) -> None:
    """Replace status.json by rename: a reader sees the old file or the new one. No fsync: after a
    crash the daemon writes a fresh one on its first pass, and an apply must not wait for a disk."""
    path = folder(state_dir) / "status.json"
    tmp = path.with_name(".status.json.tmp")
    tmp.write_text(json.dumps(data, sort_keys=True))
    os.replace(tmp, path)


def read_status(state_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder(state_dir) / "status.json").read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ReconcilerError(f"{folder(state_dir) / 'status.json'} is unreadable: {e}") from e
    return data if isinstance(data, dict) else None


def suspended(state_dir: Path) -> str | None:
    """`revisions` (no new revisions applied), `all` (no reconcile at all), or None."""
    try:
        level = (folder(state_dir) / "suspended").read_text().strip()
    except FileNotFoundError:
        return None
    return level if level in SUSPEND_LEVELS else "revisions"


def set_suspended(state_dir: Path, level: str | None) -> None:
    path = folder(state_dir) / "suspended"
    if level is None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".suspended.tmp")
    tmp.write_text(level + "\n")
    os.replace(tmp, path)


def poke(state_dir: Path) -> int | None:
    """SIGHUP to the running daemon (fetch and reconcile now); its pid, or None when none runs."""
    pid = running_pid(state_dir)
    if pid is None:
        return None
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return None
    return pid


def wait_for_pass(state_dir: Path, since: float, timeout: float) -> dict[str, Any]:
    """The daemon's status once it has finished a pass that started after `since`."""
    deadline = time.monotonic() + timeout
    while True:
        data = read_status(state_dir)
        if data is not None and data.get("last_pass", 0) >= since:
            return data
        if time.monotonic() >= deadline:
            raise ReconcilerError(f"the daemon did not finish a sync within {timeout:g} s")
        if running_pid(state_dir) is None:
            raise ReconcilerError("the daemon stopped before it finished the sync")
        time.sleep(0.1)
