"""Starting, reloading and stopping the resolver (as netavark does aardvark-dns): `publish` after an
apply writes the scope's records atomically and waits until the resolver serves them, starting it when
none runs and stopping it when no scope has records left; `release` before an apply deletes
namespaces; `Supervisor` restarts it for the daemon. Every wait is bounded and names what it waited for.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..diff import Action
from ..errors import ReconcilerError
from ..model import Netns
from .process import CONTROL, LOCK, LOG, SCOPES, folder_of
from .records import Pieces, Records, encode
from .server import read_line

TIMEOUT = 10.0  # seconds for the resolver to start, answer or stop
POLL = 0.01
_children: list[subprocess.Popen[bytes]] = []  # started here: reaped, never left as zombies
_published: dict[Path, Records] = {}  # what this process last wrote, per records file
_pieces: dict[Path, Pieces] = {}  # its JSON by piece, per records file (`records.encode`)


def publish(state_dir: Path, scope: str, records: Records) -> None:
    """Make the resolver serve `records` for `scope` (none: the scope's are dropped; the last scope's
    going stops the resolver and removes its folder)."""
    folder = folder_of(state_dir)
    path = folder / SCOPES / f"{scope}.json"
    if records["containers"]:
        if _published.get(path) == records and path.exists():
            changed = False  # a daemon's pass that changed nothing: no encoding, no reading
        else:
            text = encode(records, _pieces.setdefault(path, Pieces()))
            changed = _read(path) != text
        if changed:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, path)  # the resolver never reads half a file
        _published[path] = records
    else:
        changed = path.exists()
        _published.pop(path, None)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    if needed(state_dir):
        answered = _ask(folder, "reload") if changed else status(state_dir)
        if answered is None:
            ensure_running(state_dir)  # it reads every scope's records when it starts
        return
    if status(state_dir) is not None and _ask(folder, "reload") == "ok stopping":
        _wait_stopped(folder)
    shutil.rmtree(folder, ignore_errors=True)  # nothing of ours is left in the state directory


def release(state_dir: Path, actions: list[Action]) -> None:
    """Before `actions` run: the resolver closes its sockets in the namespaces they delete or replace
    (a socket keeps its namespace, and with it the namespace's veths, alive)."""
    paths = [
        a.resource.path for a in actions if isinstance(a.resource, Netns) and a.op in ("delete", "replace")
    ]
    if paths:  # one exchange: nothing listening (no resolver) or no answer is as `status`'s None
        _ask(folder_of(state_dir), "release " + json.dumps(paths), quiet=True)


def reload(state_dir: Path) -> None:
    """After an apply rolled back: serve the records as they were (released namespaces bound again)."""
    if status(state_dir) is not None:
        _ask(folder_of(state_dir), "reload")


def status(state_dir: Path) -> dict[str, Any] | None:
    """{"pid", "namespaces"} of the running resolver, None when none answers."""
    try:
        answer = _ask(folder_of(state_dir), "status", quiet=True)
    except ReconcilerError:
        return None
    if answer is None or not answer.startswith("ok "):
        return None
    found: dict[str, Any] = json.loads(answer[3:])
    return found


def describe(resolver: dict[str, Any] | None) -> str:
    """One line for `show` and `status`: whether the resolver runs, and where it listens."""
    if resolver is None:
        return "dns resolver: not running"
    return f"dns resolver: running (pid {resolver['pid']}, listening in {resolver['namespaces']} namespaces)"


def needed(state_dir: Path) -> bool:
    return any((folder_of(state_dir) / SCOPES).glob("*.json"))


def ensure_running(state_dir: Path) -> None:
    folder = folder_of(state_dir)
    deadline = time.monotonic() + TIMEOUT
    child: subprocess.Popen[bytes] | None = None
    while time.monotonic() < deadline:
        if status(state_dir) is not None:
            return
        if child is None or child.poll() is not None:
            # Its first run may find another one starting (it then exits): look again, start again.
            child = _spawn(state_dir)
        time.sleep(POLL)
    raise ReconcilerError(
        f"the DNS resolver did not answer on {folder / CONTROL} within {TIMEOUT:g} s "
        f"(its log: {folder / LOG})"
    )


def _spawn(state_dir: Path) -> subprocess.Popen[bytes]:
    folder = folder_of(state_dir)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    _reap()
    with open(folder / LOG, "ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "reconciler.dns", "--state-dir", str(state_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # survives the apply that started it, and its terminal
        )
    _children.append(child)
    return child


def _reap() -> None:
    _children[:] = [c for c in _children if c.poll() is None]


def _wait_stopped(folder: Path) -> None:
    """Until the resolver that said "stopping" released its lock (every socket closed)."""
    deadline = time.monotonic() + TIMEOUT
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while time.monotonic() < deadline:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                _reap()
                time.sleep(POLL)
    finally:
        os.close(fd)
    raise ReconcilerError(f"the DNS resolver did not stop within {TIMEOUT:g} s (it holds {folder / LOCK})")


def _ask(folder: Path, line: str, *, quiet: bool = False) -> str | None:
    """One command on the control socket; None when nothing listens there."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        try:
            sock.connect(str(folder / CONTROL))
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        sock.sendall(line.encode() + b"\n")
        answer = read_line(sock)
    except OSError as e:
        if quiet:
            return None
        raise ReconcilerError(
            f"the DNS resolver did not answer {line.split()[0]!r} on {folder / CONTROL}: {e}"
        ) from e
    finally:
        sock.close()
    return answer or None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


class Supervisor:
    """For `reconciler watch`: whenever a scope has records and no resolver answers, start one."""

    def __init__(self, state_dir: Path, log: Callable[[str], None], period: float = 0.5) -> None:
        self.state_dir, self.log, self.period = state_dir, log, period

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="dns-supervisor", daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        while True:
            _reap()
            if needed(self.state_dir) and status(self.state_dir) is None:
                self.log("the DNS resolver is not running: starting it")
                try:
                    ensure_running(self.state_dir)
                except ReconcilerError as e:
                    self.log(str(e))
            time.sleep(self.period)
