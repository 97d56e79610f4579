"""What executors share during one apply: netlink sockets (host and per namespace) and nftables."""

from __future__ import annotations

import contextlib
import errno
from collections import OrderedDict
from collections.abc import Iterator

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .. import netns
from ..nft import Nft

# Each namespace socket holds a file descriptor; keep only the most recently used ones open.
MAX_NS_SOCKETS = 64


class Context:
    def __init__(self, scope: str, ipr: IPRoute, nft: Nft) -> None:
        self.scope = scope
        self.ipr = ipr
        self.nft = nft
        self._ns: OrderedDict[str, IPRoute] = OrderedDict()

    def ns(self, path: str) -> IPRoute:
        sock = self._ns.get(path)
        if sock is None:
            sock = netns.socket_in(path)
            self._ns[path] = sock
            if len(self._ns) > MAX_NS_SOCKETS:
                self._ns.popitem(last=False)[1].close()
        else:
            self._ns.move_to_end(path)
        return sock

    def forget(self, path: str) -> None:
        """Drop the socket of a namespace about to be deleted, so it does not keep it alive."""
        sock = self._ns.pop(path, None)
        if sock is not None:
            sock.close()

    def ifindex(self, ipr: IPRoute, ifname: str) -> int | None:
        found = ipr.link_lookup(ifname=ifname)
        return found[0] if found else None

    def close(self) -> None:
        for sock in self._ns.values():
            sock.close()
        self._ns.clear()


@contextlib.contextmanager
def missing_ok() -> Iterator[None]:
    """Deleting what the kernel already removed (a veth whose peer went, a route with its device) is done."""
    try:
        yield
    except NetlinkError as e:
        if e.code not in (errno.ENODEV, errno.ENOENT, errno.ESRCH, errno.EADDRNOTAVAIL):
            raise
