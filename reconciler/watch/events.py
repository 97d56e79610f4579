"""Drift hints from the kernel: rtnetlink and nftables multicast events in the host namespace.

Two raw netlink sockets, read by one thread, turn events into `Drift` hints naming what may have
drifted; the daemon then re-observes just that and lets the pure diff decide whether anything needs
repair, so a hint never changes the host by itself (and our own applies' events cannot start a loop).

- rtnetlink (links, IPv4 addresses, IPv4 routes, neighbours): an event on a link carrying one of our
  marks names its owner (a network's bridge, a container's host-side veth). Addresses, routes and
  neighbours carry only an interface index, so the thread keeps index -> owner from link messages,
  seeded by one link dump. Neighbour churn (ARP learning) is ignored: only permanent entries, the
  kind a reconciler would create, count, and every entry on our VXLAN devices (the overlay's static
  FDB and neighbour entries; a deletion announces the entry as FAILED, no longer permanent).
- nftables: the kernel multicasts every committed change to NFNLGRP_NFTABLES (what `nft monitor`
  reads). Each message names its table, so changes to our tables are noticed the moment they are
  committed, with no polling and no listing; other tables' traffic costs one header parse.

The raw sockets are read here rather than through pyroute2: its sockets belong to one thread and each
message would cost its asyncio core far more than these few struct unpacks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import names, rtnl
from ..rtnl import (
    IFF_UP,
    IFLA_ADDRESS,
    IFLA_IFALIAS,
    IFLA_IFNAME,
    IFLA_MASTER,
    IFLA_MTU,
    NETLINK_ROUTE,
    RTA_OIF,
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_DELROUTE,
    RTM_GETLINK,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
)

NETLINK_NETFILTER = 12
RTMGRP_LINK, RTMGRP_NEIGH, RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE = 0x1, 0x4, 0x10, 0x40
NFNLGRP_NFTABLES = 7
RTM_NEWNEIGH, RTM_DELNEIGH = 28, 29
AF_BRIDGE, NDA_DST, NDA_LLADDR = 7, 1, 2
# Link attributes the model compares besides the mark: MAC, name, MTU, master.
LINK_MANAGED = (IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER)
NUD_PERMANENT = 0x80
NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWGEN = 10, 15
NFPROTO = {"inet": 1, "bridge": 7}
RCVBUF = 4 << 20
SO_RCVBUFFORCE = 33


@dataclass(frozen=True)
class Drift:
    """What may have drifted: some containers, host-level objects (bridges), our nft tables, or
    everything (events were lost). `at` is when the event arrived (time.monotonic())."""

    at: float
    containers: frozenset[str] = frozenset()
    host: bool = False
    nft: bool = False
    full: bool = False
    # FDB and neighbour entries named by their event ("fdb/MAC", "neigh/IP"): an overlay apply changes
    # entries, and a foreign deletion of another entry right after it must not pass for its echo.
    entries: frozenset[str] = frozenset()


@dataclass
class _Owners:
    """Interface index -> (scope, kind, key) of marked links, kept from link messages."""

    scope: str
    by_index: dict[int, tuple[str, str, str]] = field(default_factory=dict)
    looks: dict[int, bytes] = field(default_factory=dict)

    def hint(self, owner: tuple[str, str, str] | None, at: float) -> Drift | None:
        if owner is None or owner[0] != self.scope:
            return None
        if owner[1] == "veth":
            return Drift(at, containers=frozenset({owner[2].split("/", 1)[0]}))
        return Drift(at, host=True)

    def link(self, msg_type: int, index: int, alias: str | None, looks: bytes, at: float) -> Drift | None:
        """`looks`: the attributes we manage; the kernel re-announces links for carrier and
        operstate changes (linkwatch, up to a second late), which are not drift."""
        mark = names.parse_mark(alias)
        known = self.by_index.pop(index, None)
        seen = self.looks.pop(index, None)
        if mark is not None and msg_type == RTM_NEWLINK:
            self.by_index[index], self.looks[index] = mark, looks
            if mark == known and looks == seen:
                return None
        # A link that lost its mark still names its former owner.
        return self.hint(mark or known, at)

    def owned(self, index: int, at: float) -> Drift | None:
        return self.hint(self.by_index.get(index), at)


class Events:
    """The event thread: calls `notify` with each hint, from its own thread."""

    def __init__(self, scope: str, notify: Callable[[Drift], None]) -> None:
        self._owners = _Owners(scope)
        self.scope = scope
        self._notify = notify
        self._rt = _socket(NETLINK_ROUTE, RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE)
        self._nf = _socket(NETLINK_NETFILTER, 1 << (NFNLGRP_NFTABLES - 1))
        self._dump_seq = 0
        self._seed()
        self._thread = threading.Thread(target=self._run, name="netlink-events", daemon=True)

    def _seed(self) -> None:
        """Ask for every link: the replies come through the event socket and only fill `_owners`."""
        self._dump_seq += 1
        request = rtnl.dump_request(RTM_GETLINK, self._dump_seq, rtnl.ifinfo())
        self._rt.send(request)

    @property
    def scope(self) -> str:
        return self._owners.scope

    @scope.setter
    def scope(self, scope: str) -> None:
        """The scope whose objects matter (a spec edit may rename it)."""
        self._owners.scope = scope
        self._tables = {(NFPROTO[family], names.nft_table(scope)) for family in NFPROTO}

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        handlers = {
            self._rt.fileno(): (self._rt, self._route),
            self._nf.fileno(): (self._nf, self._netfilter),
        }
        while True:
            ready, _, _ = select.select(list(handlers), [], [])
            for fd in ready:
                sock, handle = handlers[fd]
                try:
                    data = sock.recv(1 << 20)
                except OSError as e:
                    if e.errno != errno.ENOBUFS:
                        raise
                    # The kernel dropped events: nothing short of a full observe knows what changed,
                    # and the index -> owner map may have missed links.
                    self._notify(Drift(time.monotonic(), full=True))
                    if sock is self._rt:
                        self._seed()
                    continue
                now = time.monotonic()
                for msg_type, seq, body in rtnl.messages(data):
                    if msg_type in (rtnl.NLMSG_ERROR, rtnl.NLMSG_DONE):
                        continue
                    hint = handle(msg_type, seq, body, now)
                    if hint is not None:
                        self._notify(hint)

    def _route(self, msg_type: int, seq: int, body: bytes, at: float) -> Drift | None:
        # Only the full (AF_UNSPEC) link messages: IPv6 (addrconf state) and bridge-port ones
        # describe the same link again without its alias.
        if msg_type in (RTM_NEWLINK, RTM_DELLINK) and len(body) >= 16 and body[0] == socket.AF_UNSPEC:
            index, flags = struct.unpack_from("=iI", body, 4)
            attrs = rtnl.attrs(body, 16)
            raw = attrs.get(IFLA_IFALIAS)
            alias = raw.rstrip(b"\0").decode(errors="replace") if raw else None
            looks = bytes([flags & IFF_UP]) + b"|".join(attrs.get(a, b"") for a in LINK_MANAGED)
            hint = self._owners.link(msg_type, index, alias, looks, at)
            return None if seq == self._dump_seq else hint
        if msg_type in (RTM_NEWADDR, RTM_DELADDR) and len(body) >= 8:
            return self._owners.owned(struct.unpack_from("=I", body, 4)[0], at)
        if msg_type in (RTM_NEWROUTE, RTM_DELROUTE) and len(body) >= 12:
            oif = rtnl.attrs(body, 12).get(RTA_OIF)
            return self._owners.owned(struct.unpack_from("=I", oif)[0], at) if oif and len(oif) >= 4 else None
        if msg_type in (RTM_NEWNEIGH, RTM_DELNEIGH) and len(body) >= 12:
            index, state = struct.unpack_from("=iH", body, 4)
            # Every entry on our VXLAN devices is ours, and a deleted one is announced as FAILED.
            overlay = self._owners.by_index.get(index, ("", "", ""))[1] == "vxlan"
            hint = self._owners.owned(index, at) if state & NUD_PERMANENT or overlay else None
            # Only overlay entries are named: others (a bridge port's own FDB entry) are echoes of
            # the link changes that made them.
            return hint and dataclasses.replace(hint, entries=frozenset(_entry(body) if overlay else ()))
        return None

    def _netfilter(self, msg_type: int, seq: int, body: bytes, at: float) -> Drift | None:
        if msg_type >> 8 != NFNL_SUBSYS_NFTABLES or msg_type & 0xFF == NFT_MSG_NEWGEN or len(body) < 4:
            return None
        # Attribute 1 is the table's name in every nf_tables message that belongs to a table.
        table = rtnl.attrs(body, 4).get(1)
        if table is None or (body[0], table.rstrip(b"\0").decode(errors="replace")) not in self._tables:
            return None
        return Drift(at, nft=True)


def _entry(body: bytes) -> list[str]:
    """The key of a neighbour event's entry as the overlay model names it: "fdb/MAC" for a bridge FDB
    entry, "neigh/IP" for an IPv4 neighbour."""
    attrs = rtnl.attrs(body, 12)
    if body[0] == AF_BRIDGE and len(mac := attrs.get(NDA_LLADDR, b"")) == 6:
        return ["fdb/" + ":".join(f"{b:02x}" for b in mac)]
    if body[0] == socket.AF_INET and len(ip := attrs.get(NDA_DST, b"")) == 4:
        return ["neigh/" + socket.inet_ntoa(ip)]
    return []


def _socket(protocol: int, groups: int) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
    # A burst (`nft flush ruleset` on a big table, 1,000 veths going) must not overflow the queue.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
    sock.bind((0, groups))
    return sock
