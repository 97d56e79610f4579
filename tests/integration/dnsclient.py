"""DNS queries from this test process, over sockets created inside a sandbox's namespace (a socket
stays in the namespace its thread was in when it was made), and a fake upstream server script."""

from __future__ import annotations

import os
import socket
import struct
import time

from sandbox import Host

from reconciler.dns import wire
from reconciler.netns import run_in

RESOLVER = ("127.0.0.11", 53)

# A fake upstream: answers every A question with ANSWER (argv[2]), or, with "silent", never answers;
# prints each name it was asked, so a test can tell what was forwarded.
UPSTREAM = r"""
import socket, struct, sys
addr, mode = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((addr, 53))
print("listening", flush=True)
while True:
    data, peer = s.recvfrom(4096)
    i = 12
    labels = []
    while data[i]:
        labels.append(data[i + 1 : i + 1 + data[i]].decode())
        i += data[i] + 1
    print(".".join(labels), flush=True)
    if mode == "silent":
        continue
    ip = bytes(int(x) for x in mode.split("."))
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + ip
    s.sendto(data[:2] + b"\x81\x80" + data[4:6] + b"\x00\x01\x00\x00\x00\x00" + data[12 : i + 5] + rr, peer)
"""


def netns_path(host: Host, container: str) -> str:
    """The namespace file as this process sees it: through the sandbox init's root (its mounts)."""
    return f"/proc/{host.pid}/root/run/netns/{container}"


def socket_in(path: str, kind: int) -> socket.socket:
    return run_in(path, lambda: socket.socket(socket.AF_INET, kind))


def ask(
    host: Host, container: str, name: str, qtype: int = wire.A, tcp: bool = False, timeout: float = 3.0
) -> wire.Message:
    """One query to 127.0.0.11:53 from inside `container`'s namespace."""
    return ask_raw(
        netns_path(host, container), wire.query(name, qtype, ident=os.getpid() & 0xFFFF), tcp, timeout
    )


def ask_raw(path: str, query: bytes, tcp: bool = False, timeout: float = 3.0) -> wire.Message:
    with socket_in(path, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect(RESOLVER)
        if tcp:
            sock.sendall(struct.pack("!H", len(query)) + query)
            size = struct.unpack("!H", _exactly(sock, 2))[0]
            data = _exactly(sock, size)
        else:
            sock.send(query)
            data = sock.recv(65535)
    msg = wire.parse(data)
    assert msg.id == struct.unpack("!H", query[:2])[0] and msg.flags & wire.QR, msg
    return msg


def _exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the resolver closed the connection")
        data += chunk
    return data


def addresses(msg: wire.Message) -> list[str]:
    assert msg.rcode == wire.NOERROR, msg
    return [wire.address_of(a.data) for a in msg.answers if a.type in (wire.A, wire.AAAA)]


def timed(fn: object) -> tuple[object, float]:
    start = time.monotonic()
    result = fn()  # type: ignore[operator]
    return result, time.monotonic() - start
