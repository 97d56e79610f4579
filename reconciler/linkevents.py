"""Links the kernel announces deleted, heard on a socket subscribed to the host's link events: what
a wait for a few veths to go listens to, instead of dumping every link of the host again and again
(a dump of 1,000 veths costs about 10 ms to parse; an event names its one link)."""

from __future__ import annotations

import contextlib
import errno
import select
import socket

from . import rtnl

RTMGRP_LINK = 0x1
SO_RCVBUFFORCE = 33
RCVBUF = 4 << 20  # a namespace teardown of 1,000 veths sends two messages each
IFINFO_SIZE = 16
WANTED = frozenset({rtnl.IFLA_IFNAME})


class Deletions:
    """Subscribed from creation on: a deletion after it is heard, whenever `wait` is called."""

    def __init__(self) -> None:
        kind = socket.SOCK_RAW | socket.SOCK_NONBLOCK
        self.sock = socket.socket(socket.AF_NETLINK, kind, rtnl.NETLINK_ROUTE)
        with contextlib.suppress(OSError):  # without CAP_NET_ADMIN the default size; a loss is told
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        self.sock.bind((0, RTMGRP_LINK))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Deletions:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait(self, timeout: float) -> set[str] | None:
        """The names of the links deleted since the last call, waiting up to `timeout` seconds for the
        first (an empty set: none in that time); None when the kernel dropped events (its queue
        overflowed): the caller looks again itself."""
        ready, _, _ = select.select([self.sock], [], [], max(timeout, 0.0))
        gone: set[str] = set()
        if not ready:
            return gone
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                return gone
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
                self._drain()
                return None
            gone.update(_deleted(data))

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self.sock.recv(1 << 20):
                pass


def _deleted(data: bytes) -> list[str]:
    """The links one datagram says are gone: AF_UNSPEC RTM_DELLINK (a bridge port's leaving its
    bridge is an AF_BRIDGE one, the link itself stays)."""
    out = []
    for kind, _, body in rtnl.messages(data):
        if kind != rtnl.RTM_DELLINK or len(body) < IFINFO_SIZE or body[0] != socket.AF_UNSPEC:
            continue
        name = rtnl.attrs(body, IFINFO_SIZE, WANTED).get(rtnl.IFLA_IFNAME)
        if name is not None:
            out.append(name.rstrip(b"\0").decode(errors="replace"))
    return out
