"""Network namespaces without fork/exec: create, delete, and open netlink sockets inside them.

`ip netns add` is unshare + a bind mount of the new namespace onto /run/netns/NAME; we do the same.
unshare(CLONE_NEWNET) and setns() act on the calling thread only, and `_in_thread` always brings the
thread back to its own namespace afterwards. A netlink socket belongs to the namespace its creating
thread was in, so `socket_in`/`rtnl_in` create the socket after entering the namespace and keep it.
(IPRoute creates sockets lazily, per thread, in whatever namespace that thread is in;
`IPRoute(netns=...)` forks a helper process per namespace instead.)
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import socket
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TypeVar

from . import fault
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
_run_dir_ready = False
T = TypeVar("T")


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _in_thread(fn: Callable[[], T]) -> T:
    """Run `fn` (which enters or creates a namespace) in this thread, then bring the thread back to its
    own namespace whatever happened: a thread start or a hand-off to a worker costs more than the
    two setns calls, and a thousand namespaces make that count."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        return fn()
    finally:
        rc = _libc.setns(home, CLONE_NEWNET)
        os.close(home)
        if rc != 0:  # never carry on in the wrong namespace
            os.abort()


def _enter(path: str) -> None:
    """Move the calling thread into the namespace at `path` (from a function `_in_thread` runs)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), f"setns {path}")
    finally:
        os.close(fd)


def _prepare_run_dir() -> None:
    """Make /run/netns a shared mount point, as iproute2 does, so namespaces we mount there are seen
    from other mount namespaces (e.g. a container runtime's)."""
    global _run_dir_ready
    if _run_dir_ready:
        return
    os.makedirs(NETNS_DIR, exist_ok=True)
    if _libc.mount(b"", NETNS_DIR.encode(), b"none", MS_SHARED | MS_REC, None) != 0:
        _check(
            _libc.mount(NETNS_DIR.encode(), NETNS_DIR.encode(), b"none", MS_BIND | MS_REC, None),
            "bind /run/netns",
        )
        _check(_libc.mount(b"", NETNS_DIR.encode(), b"none", MS_SHARED | MS_REC, None), "share /run/netns")
    _run_dir_ready = True


def create(path: str, sysctls: dict[str, str] | None = None) -> None:
    """`sysctls`: written in the new namespace at once (by the thread that made it)."""
    _prepare_run_dir()
    # O_EXCL unless the file is a crashed run's unmounted leftover: never mount over a live namespace.
    exclusive = 0 if os.path.exists(path) and not is_netns(path) else os.O_EXCL
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | exclusive, 0o444))

    def run() -> None:
        _check(_libc.unshare(CLONE_NEWNET), "unshare")
        for name, value in (sysctls or {}).items():
            with open(f"/proc/sys/{name}", "w") as f:
                f.write(value)
        src = f"/proc/self/task/{threading.get_native_id()}/ns/net"
        _check(_libc.mount(src.encode(), path.encode(), b"none", MS_BIND, None), f"mount {path}")

    try:
        _in_thread(run)
    except OSError:
        os.unlink(path)
        raise
    fault.step()


def delete(path: str) -> None:
    """Unmount and remove a namespace file; the kernel frees the namespace (and its veths) once
    nothing else holds it."""
    rc = _libc.umount2(path.encode(), MNT_DETACH)
    if rc != 0 and ctypes.get_errno() not in (22, 2):  # EINVAL: not mounted; ENOENT: gone
        _check(rc, f"umount {path}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fault.step()


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

    return IPRoute(fileno=_netlink_fd_in(path, socket.SOCK_DGRAM))


def rtnl_in(path: str) -> Rtnl:
    """A raw rtnetlink socket (reconciler.rtnl) in the namespace at `path`."""
    return Rtnl(_netlink_fd_in(path, socket.SOCK_RAW))


def _netlink_fd_in(path: str, kind: int) -> int:
    """A NETLINK_ROUTE socket created inside the namespace at `path`: a socket keeps the namespace it
    was born in, so it is made in a thread that entered it."""

    def run() -> int:
        _enter(path)
        return socket.socket(socket.AF_NETLINK, kind, NETLINK_ROUTE).detach()

    return _in_thread(run)


def each(paths: Iterable[str], fn: Callable[[str, Rtnl], None]) -> list[str]:
    """Call `fn(path, socket)` for every path that is a mounted network namespace, entering them in
    turn (one open socket at a time); returns the others, in order (absent, not a namespace, or the
    empty file a crash between create and mount leaves). Each path is opened once: entering it is
    what tells a namespace from the rest, with no `is_netns` before (a thousand opens and ioctls)."""
    others: list[str] = []

    def run() -> None:
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                others.append(path)
                continue
            try:
                rc = _libc.setns(fd, CLONE_NEWNET)
            finally:
                os.close(fd)
            if rc != 0:
                err = ctypes.get_errno()
                if err != errno.EINVAL:  # EINVAL: not a network namespace
                    raise OSError(err, f"setns {path}: {os.strerror(err)}")
                others.append(path)
                continue
            with Rtnl() as sock:
                fn(path, sock)

    _in_thread(run)
    return others


def write_sysctls(path: str, values: dict[str, str]) -> None:
    """Write sysctls (`net/ipv6/conf/eth0/accept_ra` -> "0") of the namespace at `path`: /proc/sys/net
    shows the namespace of whoever opens it, so the files are opened in a thread that entered it."""

    def run() -> None:
        _enter(path)
        for name, value in values.items():
            with open(f"/proc/sys/{name}", "w") as f:
                f.write(value)

    _in_thread(run)


def scratch() -> Rtnl:
    """A raw rtnetlink socket in a fresh, unnamed namespace (for probes): the namespace and everything
    created in it go away when the socket is closed."""

    def run() -> int:
        _check(_libc.unshare(CLONE_NEWNET), "unshare")
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE).detach()

    return Rtnl(_in_thread(run))


def run_in(path: str, fn: Callable[[], T]) -> T:
    """`fn()` in this thread, inside the namespace at `path` (libnftables acts on the caller's)."""

    def run() -> T:
        _enter(path)
        return fn()

    return _in_thread(run)
