"""Network namespaces without fork/exec: create, delete, and open netlink sockets inside them.

`ip netns add` is unshare + a bind mount of the new namespace onto /run/netns/NAME; we do the same
from a short-lived thread, because unshare(CLONE_NEWNET) and setns() act on the calling thread only.
A netlink socket belongs to the namespace its creating thread was in, so `socket_in` creates the raw
socket in a thread that has entered the namespace and hands its descriptor to IPRoute. (IPRoute
creates sockets lazily, per thread, in whatever namespace that thread is in; `IPRoute(netns=...)`
forks a helper process per namespace instead.)
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import socket
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from .names import NETNS_DIR
from .rtnl import Rtnl

if TYPE_CHECKING:
    from pyroute2 import IPRoute

CLONE_NEWNET = 0x40000000
MS_BIND, MS_REC, MS_SHARED = 4096, 16384, 1 << 20
MNT_DETACH = 2
NETLINK_ROUTE = 0
NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3)
_libc = ctypes.CDLL(None, use_errno=True)
_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netns")
T = TypeVar("T")


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _in_thread(fn: Callable[[], T]) -> T:
    """Run `fn` in the namespace worker: one long-lived thread that only ever acts on its own namespaces
    (each job enters or creates the one it needs first), so a thousand namespaces cost no thread starts."""
    return _worker.submit(fn).result()


def _prepare_run_dir() -> None:
    """Make /run/netns a shared mount point, as iproute2 does, so namespaces we mount there are seen
    from other mount namespaces (e.g. a container runtime's)."""
    os.makedirs(NETNS_DIR, exist_ok=True)
    if _libc.mount(b"", NETNS_DIR.encode(), b"none", MS_SHARED | MS_REC, None) == 0:
        return
    _check(
        _libc.mount(NETNS_DIR.encode(), NETNS_DIR.encode(), b"none", MS_BIND | MS_REC, None),
        "bind /run/netns",
    )
    _check(_libc.mount(b"", NETNS_DIR.encode(), b"none", MS_SHARED | MS_REC, None), "share /run/netns")


def create(path: str) -> None:
    _prepare_run_dir()
    # O_EXCL unless the file is a crashed run's unmounted leftover: never mount over a live namespace.
    exclusive = 0 if os.path.exists(path) and not is_netns(path) else os.O_EXCL
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | exclusive, 0o444))

    def run() -> None:
        _check(_libc.unshare(CLONE_NEWNET), "unshare")
        src = f"/proc/self/task/{threading.get_native_id()}/ns/net"
        _check(_libc.mount(src.encode(), path.encode(), b"none", MS_BIND, None), f"mount {path}")

    try:
        _in_thread(run)
    except OSError:
        os.unlink(path)
        raise


def delete(path: str) -> None:
    """Unmount and remove a namespace file; the kernel frees the namespace (and its veths) once
    nothing else holds it."""
    rc = _libc.umount2(path.encode(), MNT_DETACH)
    if rc != 0 and ctypes.get_errno() not in (22, 2):  # EINVAL: not mounted; ENOENT: gone
        _check(rc, f"umount {path}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def is_netns(path: str) -> bool:
    """True when `path` is a mounted network namespace (not a leftover empty file)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:  # not a namespace file at all (ENOTTY), e.g. a leftover empty file
        return False
    finally:
        os.close(fd)


def socket_in(path: str) -> IPRoute:
    """An IPRoute whose socket lives in the namespace at `path`."""
    from pyroute2 import IPRoute  # imported on demand: it costs 0.3 s, and the bridge driver needs none

    fd = os.open(path, os.O_RDONLY)

    def run() -> int:
        try:
            _check(_libc.setns(fd, CLONE_NEWNET), f"setns {path}")
        finally:
            os.close(fd)
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE).detach()

    return IPRoute(fileno=_in_thread(run))


def rtnl_in(path: str) -> Rtnl:
    """A raw rtnetlink socket (reconciler.rtnl) in the namespace at `path`."""
    fd = os.open(path, os.O_RDONLY)

    def run() -> int:
        try:
            _check(_libc.setns(fd, CLONE_NEWNET), f"setns {path}")
        finally:
            os.close(fd)
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE).detach()

    return Rtnl(_in_thread(run))


def each(paths: Iterable[str], fn: Callable[[str, Rtnl], None]) -> None:
    """Call `fn(path, socket)` for every namespace, from one thread that enters them in turn: one
    thread for a thousand namespaces, and one open socket at a time."""

    def run() -> None:
        for path in paths:
            fd = os.open(path, os.O_RDONLY)
            try:
                _check(_libc.setns(fd, CLONE_NEWNET), f"setns {path}")
            finally:
                os.close(fd)
            with Rtnl() as sock:
                fn(path, sock)

    _in_thread(run)


def scratch() -> Rtnl:
    """A raw rtnetlink socket in a fresh, unnamed namespace (for probes): the namespace and everything
    created in it go away when the socket is closed."""

    def run() -> int:
        _check(_libc.unshare(CLONE_NEWNET), "unshare")
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE).detach()

    return Rtnl(_in_thread(run))
