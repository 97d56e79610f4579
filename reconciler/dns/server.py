"""The resolver process: one thread serving every namespace from one epoll loop.

Its sockets are bound at 127.0.0.11:53 inside each container namespace (a short-lived thread enters
the namespace, creates them and leaves: a socket stays in the namespace it was born in), so the socket a
query came in on says who asks. Everything else it does from the host's namespace, where the main
thread stays: upstream queries go out there (a host resolver on 127.0.0.53 works).

Answers are precomputed (records.py): a query costs a label walk, one dict lookup and one join. A
reload (`reload` on the control socket) swaps views in place on the sockets it keeps, so no query is
lost to it; only namespaces that came or went get sockets bound or closed.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import functools
import json
import os
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..netns import _enter, _in_thread
from . import records, wire
from .records import Answer, Compiled, View
from .upstream import PORT, Upstreams

LISTEN = ("127.0.0.11", 53)
IP_FREEBIND = 15  # bind before the namespace's lo is up: it answers once it is
BATCH = 64  # datagrams read from one socket per wake-up: a flooding namespace cannot starve others
SERVER_TIMEOUT = 0.5  # per upstream server, then the next (moby #20335: 12 s stalls)
FORWARD_DEADLINE = 1.5  # then SERVFAIL: before any stub resolver gives up on us (glibc: 5 s)
MAX_FORWARDS = 1024  # in flight, all namespaces
MAX_FORWARDS_PER_VIEW = 128
MAX_CONNS = 16  # TCP connections per namespace
TCP_IDLE = 10.0
SWEEP = 1.0  # seconds between checks that bound namespaces still exist (an adopted one's process died)
MAX_TCP_MESSAGE = 65535
HOT_LIMIT = 1 << 16  # remembered replies, all views: at most a few MB


class Stop(Exception):
    """SIGTERM: leave the loop and close everything."""


@dataclass
class Binding:
    path: str
    inode: tuple[int, int]
    udp: socket.socket
    tcp: socket.socket
    view: View
    conns: int = 0


@dataclass
class Conn:
    sock: socket.socket
    binding: Binding
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    last: float = 0.0
    writing: bool = False


@dataclass
class Forward:
    query: bytes
    qend: int
    view: View
    reply: Callable[[bytes], None]
    deadline: float
    servers: list[str]
    attempt: int = 0
    sock: socket.socket | None = None
    server: str = ""
    done: bool = False


def _header_only(rcode: int) -> tuple[bytes, bytes]:
    return Answer(rcode, []).headers


NODATA, NXDOMAIN, REFUSED, SERVFAIL, NOTIMP = (
    _header_only(r) for r in (wire.NOERROR, wire.NXDOMAIN, wire.REFUSED, wire.SERVFAIL, wire.NOTIMP)
)
FORMERR = struct.pack("!HHHHH", wire.QR | wire.RA | wire.FORMERR, 0, 0, 0, 0)


class Resolver:
    def __init__(self, folder: Path, resolv_conf: str) -> None:
        self.folder = folder
        self.upstreams = Upstreams(resolv_conf)
        self.epoll = select.epoll()
        self.handlers: dict[int, Callable[[int], None]] = {}
        self.bound: dict[str, Binding] = {}
        self.compiled = Compiled({}, set())
        self._read: dict[str, tuple[str, records.Records]] = {}  # load_scopes' texts, per scope
        self.conns: dict[int, Conn] = {}
        self.forwards: dict[int, Forward] = {}
        self.per_view: collections.Counter[int] = collections.Counter()
        self.timers: collections.deque[tuple[float, Forward, socket.socket]] = collections.deque()
        self.next_sweep = time.monotonic() + SWEEP
        self.stopping = False
        self.hot_entries = 0
        self.control: socket.socket | None = None

    # The loop.
    def serve(self, control: socket.socket) -> None:
        self.control = control
        control.setblocking(False)
        self._register(control, self._on_control)
        while not self.stopping:
            timeout = SWEEP
            if self.timers:
                timeout = max(0.0, min(timeout, self.timers[0][0] - time.monotonic()))
            for fd, events in self.epoll.poll(timeout):
                handler = self.handlers.get(fd)
                if handler is not None:
                    handler(events)
            now = time.monotonic()
            self._expire(now)
            if now >= self.next_sweep:
                self.next_sweep = now + SWEEP
                self._sweep(now)

    def _register(
        self, sock: socket.socket, handler: Callable[[int], None], mask: int = select.EPOLLIN
    ) -> None:
        self.epoll.register(sock.fileno(), mask)
        self.handlers[sock.fileno()] = handler

    def _unregister(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if fd >= 0 and self.handlers.pop(fd, None) is not None:
            self.epoll.unregister(fd)
        sock.close()

    def close(self) -> None:
        for binding in list(self.bound.values()):
            self._unbind(binding)
        for fwd in list(self.forwards.values()):
            self._finish(fwd)
        self.epoll.close()

    # Answers.
    def answer(self, data: bytes, view: View) -> bytes | None:
        """The reply, or None: dropped (a response, not a query) or forwarded (the reply comes later).
        A query seen before (the same bytes after its ID) is answered from the view's `hot` map."""
        tail = view.hot.get(data[2:])
        if tail is not None:
            return data[:2] + tail
        end = wire.question_end(data)
        if end < 0:
            if len(data) < 12 or data[2] & 0x80:
                return None  # no ID to answer, or a response: never answer one (no loops)
            return data[:2] + FORMERR
        flags = data[2]
        if flags & 0xF8:  # QR set, or an opcode other than QUERY
            return None if flags & 0x80 else data[:2] + NOTIMP[flags & 1] + data[12 : end + 5]
        rd = flags & 1
        found = view.table.get(data[12 : end + 3].lower())
        if found is not None and data[end + 3] == 0 and data[end + 4] == wire.IN:
            reply = data[:2] + found.headers[rd] + data[12 : end + 5] + found.body()
            if len(found.records) > 1:
                return reply  # rotating: each query its own order
        else:
            qname = data[12 : end + 1].lower()
            if qname in view.names:
                reply = data[:2] + NODATA[rd] + data[12 : end + 5]
            elif qname in self.compiled.ours:
                reply = data[:2] + NXDOMAIN[rd] + data[12 : end + 5]
            elif not view.forward:
                reply = data[:2] + REFUSED[rd] + data[12 : end + 5]  # no name leaves an internal network
            else:
                return b""  # not ours: the caller forwards it
        if len(reply) <= wire.UDP_LIMIT:  # what UDP and TCP answer alike
            self._remember(view, data[2:], reply[2:])
        return reply

    def _remember(self, view: View, query: bytes, tail: bytes) -> None:
        if self.hot_entries >= HOT_LIMIT:
            for each in {id(v): v for v in self.compiled.views.values()}.values():
                each.hot.clear()  # many distinct queries (or case games): start again, bounded
            self.hot_entries = 0
        view.hot[query] = tail
        self.hot_entries += 1

    def _on_udp(self, binding: Binding) -> Callable[[int], None]:
        sock = binding.udp

        recvfrom = sock.recvfrom

        def handle(_: int) -> None:
            for _ in range(BATCH):
                try:
                    data, peer = recvfrom(4096)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    continue
                reply = self.answer(data, binding.view)
                if reply is None:
                    continue
                if not reply:
                    self._forward(data, binding.view, functools.partial(self._send_udp, sock, peer=peer))
                    continue
                if len(reply) > wire.UDP_LIMIT:
                    reply = _truncated(reply)
                self._send_udp(sock, reply, peer)

        return handle

    @staticmethod
    def _send_udp(sock: socket.socket, reply: bytes, peer: tuple[str, int]) -> None:
        # The asker may be gone, or its buffer full: UDP may drop, the stub asks again.
        with contextlib.suppress(OSError):
            sock.sendto(reply, peer)

    # TCP.
    def _on_listen(self, binding: Binding) -> Callable[[int], None]:
        def handle(_: int) -> None:
            for _ in range(MAX_CONNS):
                try:
                    sock, _peer = binding.tcp.accept()
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    return
                if binding.conns >= MAX_CONNS:
                    sock.close()
                    continue
                sock.setblocking(False)
                binding.conns += 1
                conn = Conn(sock, binding, last=time.monotonic())
                self.conns[sock.fileno()] = conn
                self._register(sock, functools.partial(self._on_conn, conn))

        return handle

    def _on_conn(self, conn: Conn, events: int) -> None:
        if events & select.EPOLLOUT:
            self._flush(conn)
        if not events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
            return
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        conn.last = time.monotonic()
        conn.inbuf += data
        while len(conn.inbuf) >= 2:
            size = conn.inbuf[0] << 8 | conn.inbuf[1]
            if len(conn.inbuf) < 2 + size:
                return
            message = bytes(conn.inbuf[2 : 2 + size])
            del conn.inbuf[: 2 + size]
            reply = self.answer(message, conn.binding.view)
            if reply is None:
                continue
            if not reply:
                self._forward(message, conn.binding.view, functools.partial(self._send_tcp, conn))
                continue
            self._send_tcp(conn, reply)

    def _send_tcp(self, conn: Conn, reply: bytes) -> None:
        if conn.sock.fileno() < 0:
            return  # closed while its query was forwarded
        conn.outbuf += struct.pack("!H", len(reply)) + reply
        self._flush(conn)

    def _flush(self, conn: Conn) -> None:
        try:
            sent = conn.sock.send(conn.outbuf)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._drop(conn)
            return
        del conn.outbuf[:sent]
        if conn.writing != bool(conn.outbuf):  # EPOLLOUT only while something waits to be sent
            conn.writing = bool(conn.outbuf)
            mask = select.EPOLLIN | (select.EPOLLOUT if conn.writing else 0)
            self.epoll.modify(conn.sock.fileno(), mask)
        if len(conn.outbuf) > 4 * MAX_TCP_MESSAGE:
            self._drop(conn)  # it sends and never reads

    def _drop(self, conn: Conn) -> None:
        if self.conns.pop(conn.sock.fileno(), None) is not None:
            conn.binding.conns -= 1
            self._unregister(conn.sock)

    # Forwarding.
    def _forward(self, query: bytes, view: View, reply: Callable[[bytes], None]) -> None:
        end = wire.question_end(query)
        rd = query[2] & 1
        servers = self.upstreams.current()
        if (
            not servers
            or len(self.forwards) >= MAX_FORWARDS
            or self.per_view[id(view)] >= MAX_FORWARDS_PER_VIEW
        ):
            reply(query[:2] + SERVFAIL[rd] + query[12 : end + 5])
            return
        fwd = Forward(query, end, view, reply, time.monotonic() + FORWARD_DEADLINE, servers)
        self.per_view[id(view)] += 1
        self._try_next(fwd)

    def _try_next(self, fwd: Forward) -> None:
        while fwd.attempt < len(fwd.servers):
            now = time.monotonic()
            if now >= fwd.deadline:
                break
            server = fwd.servers[fwd.attempt]
            fwd.attempt += 1
            family = socket.AF_INET6 if ":" in server else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            try:
                sock.connect((server, PORT))  # a fresh socket, a random source port, per query
                sock.send(fwd.query)
            except OSError:
                sock.close()
                self.upstreams.failed(server)
                continue
            fwd.sock, fwd.server = sock, server
            self.forwards[sock.fileno()] = fwd
            self._register(sock, functools.partial(self._on_upstream, fwd, sock))
            self.timers.append((min(now + SERVER_TIMEOUT, fwd.deadline), fwd, sock))
            return
        fwd.reply(fwd.query[:2] + SERVFAIL[fwd.query[2] & 1] + fwd.query[12 : fwd.qend + 5])
        self._finish(fwd)

    def _on_upstream(self, fwd: Forward, sock: socket.socket, _events: int) -> None:
        try:
            data = sock.recv(65535)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # refused: nothing listens there
            self._give_up_on(fwd, sock)
            return
        q = fwd.query
        if (
            len(data) < 12
            or data[:2] != q[:2]
            or not data[2] & 0x80
            or data[12 : fwd.qend + 5].lower() != q[12 : fwd.qend + 5].lower()
        ):
            return  # not the answer to this question: wait for it
        fwd.reply(data)
        self._finish(fwd)

    def _give_up_on(self, fwd: Forward, sock: socket.socket) -> None:
        self.upstreams.failed(fwd.server)
        self.forwards.pop(sock.fileno(), None)
        self._unregister(sock)
        fwd.sock = None
        self._try_next(fwd)

    def _finish(self, fwd: Forward) -> None:
        if fwd.done:
            return
        fwd.done = True
        self.per_view[id(fwd.view)] -= 1
        if self.per_view[id(fwd.view)] <= 0:
            del self.per_view[id(fwd.view)]
        if fwd.sock is not None:
            self.forwards.pop(fwd.sock.fileno(), None)
            self._unregister(fwd.sock)
            fwd.sock = None

    def _expire(self, now: float) -> None:
        # Every timer has the same length (or less, at the deadline): the deque is in order.
        while self.timers and self.timers[0][0] <= now:
            _, fwd, sock = self.timers.popleft()
            if not fwd.done and fwd.sock is sock:
                self._give_up_on(fwd, sock)

    def _sweep(self, now: float) -> None:
        for conn in [c for c in self.conns.values() if now - c.last > TCP_IDLE]:
            self._drop(conn)
        for binding in list(self.bound.values()):
            if _inode(binding.path) != binding.inode:
                self._unbind(binding)  # gone: keep no namespace alive (a socket holds its namespace)

    # Records and namespaces.
    def reload(self) -> bool:
        """Read every scope's records and bind or unbind namespaces to match; False when none remain."""
        scopes = load_scopes(self.folder, self._read)
        self.compiled = records.compile_all(scopes, self.compiled)
        self.hot_entries = 0  # new or kept views, empty `hot` maps
        wanted = self.compiled.views
        # A namespace made again at the same path was released before (`release`), or is found by
        # the sweep: no stat per namespace here, where a thousand would cost more than the rest.
        for path in self.bound.keys() - wanted.keys():
            self._unbind(self.bound[path])
        for binding in bind_all(list(wanted.keys() - self.bound.keys()), wanted):
            self.bound[binding.path] = binding
            self._register(binding.udp, self._on_udp(binding))
            self._register(binding.tcp, self._on_listen(binding))
        for path, binding in self.bound.items():
            binding.view = wanted[path]
        return bool(scopes)

    def release(self, paths: list[str]) -> None:
        """Close the sockets of namespaces about to be deleted, so none outlives its deletion."""
        for path in paths:
            binding = self.bound.get(path)
            if binding is not None:
                self._unbind(binding)

    def _unbind(self, binding: Binding) -> None:
        for conn in [c for c in self.conns.values() if c.binding is binding]:
            self._drop(conn)
        self._unregister(binding.udp)
        self._unregister(binding.tcp)
        self.bound.pop(binding.path, None)

    # Control.
    def _on_control(self, _: int) -> None:
        assert self.control is not None
        try:
            conn, _peer = self.control.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(2)
            try:
                line = read_line(conn)
                conn.sendall(self.command(line).encode() + b"\n")
            except OSError:
                return

    def command(self, line: str) -> str:
        verb, _, rest = line.partition(" ")
        if verb == "reload":
            if self.reload():
                return f"ok {len(self.bound)}"
            self.stopping = True
            return "ok stopping"
        if verb == "release":
            self.release(json.loads(rest))
            return "ok"
        if verb == "status":
            return "ok " + json.dumps({"pid": os.getpid(), "namespaces": len(self.bound)})
        return f"error unknown command {verb!r}"


def read_line(conn: socket.socket) -> str:
    """One control line (both ends of the control socket), bounded."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > 1 << 20:
            raise OSError(errno.EMSGSIZE, "control message too long")
    return data.decode().strip()


def _truncated(reply: bytes) -> bytes:
    """One of our answers with TC set and the records that fit (the stub asks again over TCP)."""
    end = wire.question_end(reply)
    out = bytearray(reply[: end + 5])
    count = 0
    offset = end + 5
    while offset + 12 <= len(reply):
        size = 12 + (reply[offset + 10] << 8 | reply[offset + 11])
        if len(out) + size > wire.UDP_LIMIT:
            break
        out += reply[offset : offset + size]
        offset += size
        count += 1
    out[2] |= wire.TC >> 8
    out[6:8] = struct.pack("!H", count)
    out[8:12] = b"\0\0\0\0"
    return bytes(out)


def _inode(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0)
    return (st.st_dev, st.st_ino)


def bind_all(paths: list[str], views: dict[str, View]) -> list[Binding]:
    """Sockets at 127.0.0.11:53 in each namespace, made in a thread that enters them in turn; a
    namespace that cannot be entered or bound (gone, or its own DNS server holds :53) is reported and
    skipped, and tried again on the next reload."""
    out: list[Binding] = []
    if not paths:
        return out  # no thread to start (a reload after a removal binds nothing)

    def run() -> None:
        for path in paths:
            try:
                inode = _inode(path)
                _enter(path)
                out.append(Binding(path, inode, *_sockets(), view=views[path]))
            except OSError as e:
                print(f"cannot listen in {path}: {e.strerror or e}", file=sys.stderr, flush=True)

    worker = threading.Thread(target=lambda: _in_thread(run), name="bind")
    worker.start()
    worker.join()
    return out


def _sockets() -> tuple[socket.socket, socket.socket]:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        for sock in (udp, tcp):
            sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
            sock.setblocking(False)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a killed resolver's TIME_WAITs
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        udp.bind(LISTEN)
        tcp.bind(LISTEN)
        tcp.listen(64)
    except OSError:
        udp.close()
        tcp.close()
        raise
    return udp, tcp


def load_scopes(folder: Path, last: dict[str, tuple[str, records.Records]]) -> dict[str, records.Records]:
    """Every scope's records; `last` (scope -> the text and records read before, updated here): a
    file that reads as it did is not parsed again (a reload after one scope's apply parses that one)."""
    out = {}
    for path in sorted((folder / "scopes").glob("*.json")):
        try:
            text = path.read_text()
            before = last.get(path.stem)
            data = before[1] if before is not None and before[0] == text else json.loads(text)
        except (OSError, ValueError) as e:
            print(f"ignoring {path}: {e}", file=sys.stderr, flush=True)
            continue
        if isinstance(data, dict) and data.get("version") == records.VERSION:
            out[path.stem] = data
            last[path.stem] = (text, data)
    for scope in last.keys() - out.keys():
        del last[scope]
    return out
