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

One thread serves the socket (a selector: it accepts, reads requests, queues them for the loop and
sends the heartbeats), and the loop writes its answer to the client itself, so a handed apply takes
two wake-ups (that thread's, the loop's) rather than four: under load each waits for a core. What
does not fit the socket's buffer at once is left to the thread, so a client that stops reading
never holds up the loop.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import struct
import threading
import time
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
SEND_WAIT = 10.0  # for a client to read what is left of an answer (its SILENCE)
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
    _lock: threading.Lock = field(default_factory=threading.Lock)  # the state and the connection
    _conn: socket.socket | None = None  # the client's, until the answer is sent (or handed on)
    _rest: Callable[[socket.socket, bytes], None] | None = None  # sends what the buffer did not take

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

    @property
    def answered(self) -> bool:
        return self._conn is None

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

    def beat(self) -> bool:
        """A heartbeat, from the connection's thread while the answer is not sent; False when the
        answer went already, or the client left or stopped reading (its connection is then closed)."""
        with self._lock:
            if self._conn is None:
                return False
            if _sent_now(self._conn, _line({"state": "wait"})) is None:
                return True
            self._conn.close()  # a heartbeat half sent would garble the answer after it
            self._conn = None
            return False

    def busy(self, reason: str) -> None:
        """The last line of a request the loop did not take in time (it is cancelled)."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            _last(conn, {"state": "busy", "reason": reason})

    def _finish(self, answer: dict[str, Any]) -> None:
        """The answer, sent from the caller's thread (the loop) as far as the socket takes it at once."""
        self.answer = answer
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is None:
            return
        rest = _sent_now(conn, _line(answer))
        if rest and self._rest is not None:
            self._rest(conn, rest)
        else:
            conn.close()


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
    """Serves the socket from one thread: accepts, reads each request (a line, within READ_WAIT),
    queues it for the loop (`notify`), and keeps the client informed until the loop answers (the
    loop sends the answer itself; the thread sends what the socket's buffer did not take)."""

    def __init__(self, state_dir: Path, notify: Callable[[Request], None]) -> None:
        self.path = state_dir.joinpath(*SOCKET)
        self._notify = notify
        self._sock: socket.socket | None = None
        self._selector = selectors.DefaultSelector()
        self._reading: dict[socket.socket, _Reading] = {}
        self._held: list[_Held] = []  # requests queued or running, for their heartbeats
        self._writing: dict[socket.socket, _Writing] = {}
        self._handed: list[tuple[socket.socket, bytes]] = []  # answers' rests, from the loop
        self._handed_lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()

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
        sock.setblocking(False)
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sock = sock
        self._selector.register(sock, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        threading.Thread(target=self._run, name="handoff", daemon=True).start()

    def close(self) -> None:
        """No new requests: a client from now on applies locally."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _run(self) -> None:
        while True:
            for key, _ in self._selector.select(self._timeout(time.monotonic())):
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                with contextlib.suppress(OSError):  # a client that left: what it handed over goes on
                    if conn is self._sock:
                        self._accept(conn)
                    elif conn is self._wake_r:
                        self._take_rests()
                    elif conn in self._reading:
                        self._read(conn)
                    else:
                        self._write(conn)
            self._tick(time.monotonic())

    def _timeout(self, now: float) -> float:
        due = [r.deadline for r in self._reading.values()] + [w.deadline for w in self._writing.values()]
        due += [h.beat_at for h in self._held]
        return max(0.0, min(due) - now) if due else HEARTBEAT

    def _accept(self, sock: socket.socket) -> None:
        conn, _ = sock.accept()
        if _peer_uid(conn) not in (0, os.geteuid()):
            conn.close()
            return
        conn.setblocking(False)
        self._reading[conn] = _Reading(time.monotonic() + READ_WAIT)
        self._selector.register(conn, selectors.EVENT_READ)

    def _read(self, conn: socket.socket) -> None:
        reading = self._reading[conn]
        try:
            chunk = conn.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        reading.chunks.append(chunk)
        reading.size += len(chunk)
        if chunk and not chunk.endswith(b"\n") and reading.size <= MAX_REQUEST:
            return
        self._selector.unregister(conn)
        del self._reading[conn]
        if not chunk:
            conn.close()  # the request ended early
            return
        self._request(conn, b"".join(reading.chunks))

    def _request(self, conn: socket.socket, line: bytes) -> None:
        try:
            if len(line) > MAX_REQUEST:
                raise ValueError("the request is too large")
            data = json.loads(line)
            if data.get("protocol") != PROTOCOL:
                _last(conn, {"state": "local", "reason": f"the daemon speaks protocol {PROTOCOL}"})
                return
            request = Request.from_json(data)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            _last(conn, {"state": "local", "reason": f"unreadable request: {e}"})
            return
        request._conn, request._rest = conn, self._hand_rest
        now = time.monotonic()
        self._held.append(_Held(request, now, now + HEARTBEAT))
        self._notify(request)

    def _tick(self, now: float) -> None:
        """Heartbeats for the requests still waiting for their answer; `busy` for one the loop did not
        take within START_WAIT; the clients that did not send or read in time are let go."""
        for conn in [c for c, r in self._reading.items() if r.deadline <= now]:
            self._drop(conn, self._reading)
        for conn in [c for c, w in self._writing.items() if w.deadline <= now]:
            self._drop(conn, self._writing)
        held = []
        for h in self._held:
            if h.beat_at > now:
                held.append(h)
                continue
            if now - h.since >= START_WAIT and h.request.cancel():
                reason = f"did not start this apply within {START_WAIT:g} s (busy reconciling); try again"
                h.request.busy(reason)
                continue
            if h.request.beat():
                h.beat_at = now + HEARTBEAT
                held.append(h)
        self._held = [h for h in held if not h.request.answered]

    def _drop(self, conn: socket.socket, table: dict[socket.socket, Any]) -> None:
        self._selector.unregister(conn)
        del table[conn]
        conn.close()

    def _hand_rest(self, conn: socket.socket, rest: bytes) -> None:
        """From the loop: what is left of an answer, for this thread to send."""
        with self._handed_lock:
            self._handed.append((conn, rest))
        with contextlib.suppress(BlockingIOError):
            self._wake_w.send(b"x")

    def _take_rests(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass
        with self._handed_lock:
            handed, self._handed = self._handed, []
        for conn, rest in handed:
            self._writing[conn] = _Writing(rest, time.monotonic() + SEND_WAIT)
            self._selector.register(conn, selectors.EVENT_WRITE)

    def _write(self, conn: socket.socket) -> None:
        writing = self._writing[conn]
        try:
            rest = _sent_now(conn, writing.rest)
        except OSError:
            rest = None
        if rest:
            writing.rest = rest
        else:
            self._drop(conn, self._writing)


@dataclass
class _Reading:
    deadline: float
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0


@dataclass
class _Held:
    request: Request
    since: float
    beat_at: float


@dataclass
class _Writing:
    rest: bytes
    deadline: float


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    return int(uid)


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def _sent_now(conn: socket.socket, data: bytes) -> bytes | None:
    """Send what the socket takes without waiting; what is left (None: all sent, b"": the peer left)."""
    view = memoryview(data)
    try:
        while view:
            view = view[conn.send(view, socket.MSG_DONTWAIT) :]
    except BlockingIOError:
        return bytes(view)
    except OSError:
        return b""
    return None


def _last(conn: socket.socket, message: dict[str, Any]) -> None:
    """A short last line (a refusal), then the connection closed."""
    with conn:
        _sent_now(conn, _line(message))


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
