"""The daemon's side of a handed-over `reconciler apply` (client.py): its socket, requests and answers.

The socket is STATE_DIR/watch/socket/apply.sock, in a folder only its owner (root) may enter, the
socket itself 0600, and the daemon serves only peers of its own uid or root (SO_PEERCRED): whoever
reaches it could change the host's network, as `apply` can.

Protocol 1, JSON lines. The client sends one request: the spec as typed, its working directory, the
spec's files ([name, text] each; name None for a single file) and apply's options. The daemon answers
`{"state": "wait"}` every HEARTBEAT seconds while the request waits for the loop or runs, then one line:
- `{"state": "done", "stdout", "stderr", "exit"}`: what a local apply would have printed, and its code;
- `{"state": "local", "reason"}`: the daemon declines, the client applies locally (another protocol
  version, another scope, the daemon suspended or without a current observation);
- `{"state": "busy", "reason"}`: the loop did not take the request within START_WAIT (the state lock's
  wait): the client exits 3, as a local apply that waited as long for the lock.
A connection closed before the last line is the daemon gone: the client says so and exits 1.

Requests run in the daemon's loop (Daemon._handed), one at a time between its own reconciles, under
the state lock; a client that leaves does not stop the one it handed over (nor does Ctrl-C on it).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..client import PROTOCOL, SOCKET
from ..spec import Spec
from ..statedir import LOCK_WAIT
from .sources import Parses

HEARTBEAT = 1.0
READ_WAIT = 5.0  # for the request line, once connected
START_WAIT = LOCK_WAIT
MAX_REQUEST = 64 << 20
KEPT_PARSES = 4


@dataclass
class Request:
    spec: str  # as the user typed it: problems name the files as a local load names them
    cwd: str
    directory: bool
    files: list[tuple[str | None, str]]
    dry_run: bool
    exit_code: bool
    output: str
    colour: bool
    host: str | None
    rollback: bool
    key_file: str | None = None  # the client's --key-file and --advertise: another one is not ours
    advertise: str | None = None
    answer: dict[str, Any] = field(default_factory=dict)
    _state: str = "queued"  # queued, taken (by the loop) or cancelled (by the connection)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _done: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Request:
        files = [(None if n is None else str(n), str(t)) for n, t in data["files"]]
        output = str(data["output"])
        if output not in ("text", "json") or not files:
            raise ValueError("bad output or no files")
        host = data.get("host")
        return cls(
            str(data["spec"]),
            str(data["cwd"]),
            bool(data["directory"]),
            files,
            bool(data["dry_run"]),
            bool(data["exit_code"]),
            output,
            bool(data["colour"]),
            None if host is None else str(host),
            bool(data["rollback"]),
            _text(data.get("key_file")),
            _text(data.get("advertise")),
        )

    @property
    def path(self) -> Path:
        """The spec's path as the daemon reads its lock files."""
        return Path(self.cwd) / self.spec

    def take(self) -> bool:
        """The loop starts it, unless the connection gave up waiting."""
        with self._lock:
            if self._state == "cancelled":
                return False
            self._state = "taken"
            return True

    def cancel(self) -> bool:
        with self._lock:
            if self._state == "taken":
                return False
            self._state = "cancelled"
            return True

    def done(self, stdout: str, stderr: str, code: int) -> None:
        self._finish({"state": "done", "stdout": stdout, "stderr": stderr, "exit": code})

    def local(self, reason: str) -> None:
        self._finish({"state": "local", "reason": reason})

    def wait(self, timeout: float) -> bool:
        return self._done.wait(timeout)

    def _finish(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self._done.set()


class Specs:
    """Handed specs parsed, the last few kept by content: applying an unchanged spec again (a no-op, a
    drift check) skips YAML and pydantic. A changed one is parsed again where it changed only, with
    `parses`, the daemon's own: a handed copy of the followed spec then shares its containers' models,
    which the part selection (`session.reach`) compares by identity."""

    def __init__(self, parses: Parses) -> None:
        self._kept: dict[tuple[object, ...], Spec] = {}
        self._parses = parses


    def load(self, request: Request) -> Spec:
        # The same files make the same spec wherever they are (a spec holds no locations).
        key = (request.directory, tuple(request.files))
        spec = self._kept.pop(key, None)
        if spec is None:  # as `load_specs(Path(request.spec))` would load the same files
            spec = self._parses.spec(Path(request.spec), request.directory, request.files)
        self._kept[key] = spec  # most recent last
        while len(self._kept) > KEPT_PARSES:
            del self._kept[next(iter(self._kept))]
        return spec


class Server:
    """Accepts connections in a thread, one more thread per connection (a few at most): each reads
    its request, queues it for the loop (`notify`) and keeps the client informed until it is done."""

    def __init__(self, state_dir: Path, notify: Callable[[Request], None]) -> None:
        self.path = state_dir.joinpath(*SOCKET)
        self._notify = notify
        self._sock: socket.socket | None = None

    def start(self) -> None:
        """Listen; the caller holds the daemon lock, so a socket left here is a dead daemon's."""
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.path))
            os.chmod(self.path, 0o600)
            sock.listen(16)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        threading.Thread(target=self._accept, name="handoff", daemon=True).start()

    def close(self) -> None:
        """No new requests: a client from now on applies locally."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _accept(self) -> None:
        assert self._sock is not None
        while True:
            conn, _ = self._sock.accept()
            threading.Thread(target=self._one, args=(conn,), name="handoff-client", daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # a client that left: what it handed over goes on
            self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        if _peer_uid(conn) not in (0, os.geteuid()):
            return
        conn.settimeout(READ_WAIT)
        try:
            data = json.loads(_read_line(conn))
            if data.get("protocol") != PROTOCOL:
                _send(conn, {"state": "local", "reason": f"the daemon speaks protocol {PROTOCOL}"})
                return
            request = Request.from_json(data)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            _send(conn, {"state": "local", "reason": f"unreadable request: {e}"})
            return
        self._notify(request)
        waited = 0.0
        while not request.wait(HEARTBEAT):
            waited += HEARTBEAT
            if waited >= START_WAIT and request.cancel():
                reason = f"did not start this apply within {START_WAIT:g} s (busy reconciling); try again"
                _send(conn, {"state": "busy", "reason": reason})
                return
            _send(conn, {"state": "wait"})
        _send(conn, request.answer)


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    return int(uid)


def _read_line(conn: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = conn.recv(1 << 16)
        if not chunk:
            raise ValueError("the request ended early")
        chunks.append(chunk)
        size += len(chunk)
        if chunk.endswith(b"\n"):
            return b"".join(chunks)
        if size > MAX_REQUEST:
            raise ValueError("the request is too large")


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
