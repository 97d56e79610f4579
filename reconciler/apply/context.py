"""What executors share during one apply: netlink sockets (host and per namespace) and nftables."""

from __future__ import annotations

import contextlib
import errno
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

from .. import netns
from ..errors import ApplyFailed
from ..linkevents import Deletions
from ..nft import Nft
from ..rtnl import NetlinkError, Rtnl

if TYPE_CHECKING:
    from pyroute2 import IPRoute

# Each namespace socket holds a file descriptor; keep only the most recently used ones open.
MAX_NS_SOCKETS = 64
# Seconds the kernel may take to tear down deleted namespaces' veths: it does a thousand in one batch
# of about a second. Past that, something we cannot see holds a namespace (an open file descriptor,
# a mount elsewhere), and its leftover veths are deleted one by one.
TEARDOWN_WAIT = 5.0
TEARDOWN_WAIT_PER_VETH = 0.005
# While no deletion is announced, the host is looked at again this often (a link renamed away sends
# none); and up to this many veths are looked up by name, more by one dump.
TEARDOWN_RECHECK = 0.1
LOOKUPS_MAX = 32
S = TypeVar("S", "IPRoute", Rtnl)


class Context:
    """`rtnl`/`rns()`: raw rtnetlink (reconciler.rtnl), what the bridge driver uses on its hot paths;
    `ipr`/`ns()`: pyroute2, created on first use, for executors that need its richer message encoders."""

    def __init__(self, scope: str, nft: Nft) -> None:
        self.scope = scope
        self.nft = nft
        self.rtnl = Rtnl()
        self._ipr: IPRoute | None = None
        self._ns: OrderedDict[str, IPRoute] = OrderedDict()
        self._rns: OrderedDict[str, Rtnl] = OrderedDict()
        self._host_index: dict[str, int | None] = {}
        # Namespaces being deleted that something else still holds (apply.execute fills it).
        self.in_use: set[str] = set()
        # Namespaces this apply created, with IPv6's quiet defaults (apply.container).
        self.quiet_netns: set[str] = set()
        # (namespace, interface name) -> index of the interfaces this apply created (apply.container).
        self.created_ifaces: dict[tuple[str, str], int] = {}
        # What the user should know about this apply besides its plan (printed, or logged by the daemon).
        self.notices: list[str] = []

    def note(self, text: str) -> None:
        self.notices.append(text)

    @property
    def ipr(self) -> IPRoute:
        if self._ipr is None:
            from pyroute2 import IPRoute

            self._ipr = IPRoute()
        return self._ipr

    def ns(self, path: str) -> IPRoute:
        return _cached(self._ns, path, netns.socket_in)

    def rns(self, path: str) -> Rtnl:
        return _cached(self._rns, path, netns.rtnl_in)

    def forget(self, path: str) -> None:
        """Drop the sockets of a namespace about to be deleted, so they do not keep it alive."""
        for cache in (self._ns, self._rns):
            sock = cache.pop(path, None)
            if sock is not None:
                sock.close()

    def host_index(self, ifname: str) -> int | None:
        """A host link's index, looked up once per apply (a bridge has a thousand ports to attach)."""
        if ifname not in self._host_index:
            self._host_index[ifname] = self.rtnl.ifindex(ifname)
        return self._host_index[ifname]

    def host_link_changed(self, ifname: str) -> None:
        self._host_index.pop(ifname, None)

    def wait_gone(self, ifnames: set[str]) -> None:
        """Wait until none of these host veths exists (the kernel removes them with their namespace);
        after a bound of a few seconds, delete the ones left. The kernel's announcements of deleted
        links end the wait the moment the last one goes; the host is looked at only before them and
        when they are silent for a while or lost (a queue overflow), never dumped for a few veths."""
        deadline = time.monotonic() + TEARDOWN_WAIT + TEARDOWN_WAIT_PER_VETH * len(ifnames)
        with Deletions() as deletions:  # subscribed before looking: no deletion falls in between
            left = self._existing(ifnames)
            while left:
                now = time.monotonic()
                if now > deadline:
                    self._delete_leftovers(left)
                    break
                gone = deletions.wait(min(deadline - now, TEARDOWN_RECHECK))
                left = left - gone if gone else self._existing(left)
                if not left:  # confirmed by looking once: the wait ends on what the host shows
                    left = self._existing(ifnames)
        for ifname in ifnames:
            self.host_link_changed(ifname)

    def _existing(self, ifnames: set[str]) -> set[str]:
        """Those of `ifnames` the host has as veths: a lookup each for a few, one dump for many."""
        if len(ifnames) <= LOOKUPS_MAX:
            return {
                ifname for ifname in ifnames if any(link.kind == "veth" for link in self.rtnl.links(ifname))
            }
        return ifnames & {link.ifname for link in self.rtnl.links(kind="veth")}

    def _delete_leftovers(self, ifnames: set[str]) -> None:
        for ifname in sorted(ifnames):
            index = self.rtnl.ifindex(ifname)
            try:
                with missing_ok():
                    if index is not None:
                        self.rtnl.del_link(index)
            except OSError as e:
                raise ApplyFailed(
                    f"host veth {ifname}: its namespace was deleted but the kernel kept it, "
                    f"and deleting it failed: {e.strerror or e}"
                ) from e
        its = "its namespace was" if len(ifnames) == 1 else "their namespaces were"
        self.note(
            f"the kernel kept {', '.join(sorted(ifnames))} after {its} deleted "
            "(held by something we cannot see: an open file, a mount elsewhere); deleted one by one"
        )

    def ifindex(self, ipr: IPRoute, ifname: str) -> int | None:
        found = ipr.link_lookup(ifname=ifname)
        return found[0] if found else None

    def close(self) -> None:
        for cache in (self._ns, self._rns):
            for sock in cache.values():
                sock.close()
            cache.clear()
        self.rtnl.close()
        if self._ipr is not None:
            self._ipr.close()


def _cached(cache: OrderedDict[str, S], path: str, open_in: Callable[[str], S]) -> S:
    sock = cache.get(path)
    if sock is None:
        sock = cache[path] = open_in(path)
        if len(cache) > MAX_NS_SOCKETS:
            cache.popitem(last=False)[1].close()
    else:
        cache.move_to_end(path)
    return sock


@contextlib.contextmanager
def missing_ok() -> Iterator[None]:
    """Deleting what the kernel already removed (a veth whose peer went, a route with its device) is done."""
    # pyroute2's NetlinkError too, when an executor used it (then it is imported already).
    pyroute2 = sys.modules.get("pyroute2.netlink.exceptions")
    errors = (NetlinkError, pyroute2.NetlinkError) if pyroute2 else (NetlinkError,)
    try:
        yield
    except errors as e:
        if e.code not in (errno.ENODEV, errno.ENOENT, errno.ESRCH, errno.EADDRNOTAVAIL):
            raise
