"""Drift hints from the kernel: rtnetlink and nftables multicast events, in the host namespace and
inside our containers' namespaces.

Two raw netlink sockets, read by one thread, turn events into `Drift` hints naming what may have
drifted; the daemon then re-observes just that and lets the pure diff decide whether anything needs
repair, so a hint never changes the host by itself (and our own applies' events cannot start a loop).

- rtnetlink (links, IPv4 addresses, IPv4 routes, neighbours): an event on a link carrying one of our
  marks names its owner (a network's bridge, a container's host-side veth). Addresses, routes and
  neighbours carry only an interface index, so the thread keeps index -> owner from link messages,
  seeded by one link dump. Neighbour churn (ARP learning) is ignored: only permanent entries, the
  kind a reconciler would create, count, and every entry on our VXLAN devices (the overlay's static
  FDB and neighbour entries; a deletion announces the entry as FAILED, no longer permanent).
- Container namespaces: the same socket listens to every namespace that has an id in the host one
  (NETLINK_LISTEN_ALL_NSID); each message comes with that id, which `follow` maps to a container.
  In our namespaces every link, IPv4 address and IPv4 route is ours to compare.
- nftables: the kernel multicasts every committed change to NFNLGRP_NFTABLES (what `nft monitor`
  reads). Each message names its table, so changes to our tables are noticed the moment they are
  committed, with no polling and no listing; other tables' traffic costs one header parse. Each
  message also carries, as its header's port id, the netlink port of the socket that committed the
  batch (NEWGEN's NFTA_GEN_PROC_PID would name the process, but by its pid in the initial pid
  namespace, which a daemon in a pid namespace does not know): the changes this process committed
  itself are no hints. Every commit of the daemon is verified by the apply that made it (a part's
  by looking up the elements it changed, not by listing the tables), so their echoes would only
  make the next loop list the whole tables again; anyone else's change keeps being a hint.

The raw sockets are read here rather than through pyroute2: its sockets belong to one thread and each
message would cost its asyncio core far more than these few struct unpacks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
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
    NLM_F_ACK,
    NLM_F_REQUEST,
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
RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE = 0x100, 0x400
RT_SCOPE_LINK = 253
RTPROT_KERNEL = 2
NFNLGRP_NFTABLES = 7
RTM_NEWNEIGH, RTM_DELNEIGH = 28, 29
AF_BRIDGE, NDA_DST, NDA_LLADDR = 7, 1, 2
# Link attributes the model compares besides the mark: MAC, name, MTU, master.
LINK_MANAGED = (IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER)
NUD_PERMANENT = 0x80
NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWGEN = 10, 15
NFPROTO = {"inet": 1, "ip": 2, "bridge": 7, "ip6": 10}  # every family a table of ours is in
RCVBUF = 4 << 20
SO_RCVBUFFORCE = 33
SOL_NETLINK, NETLINK_LISTEN_ALL_NSID = 270, 8
RTM_NEWNSID, RTM_GETNSID = 88, 90
NETNSA_NSID, NETNSA_FD = 1, 3
NSID_AUTO = struct.pack("=i", -1)
NLMSG_NOOP = 1
# A catch-up's no-op requests: sequence numbers above any link dump's.
PROBE_SEQ = 1 << 31
CATCH_UP_TIMEOUT = 0.5


@dataclass(frozen=True)
class Drift:
    """What may have drifted: some containers, host-level objects (bridges), our nft tables, or
    everything (events were lost). `at` is when the event was read (time.monotonic()), after the
    kernel made the change: an observation started after `at` sees the change."""

    at: float
    containers: frozenset[str] = frozenset()
    # Containers whose hosts file changed (host-level files, apart from their namespaces: a
    # verification may read the files of containers whose namespaces it does not read again).
    hosts: frozenset[str] = frozenset()
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

    def __init__(self, scope: str, notify: Callable[[Drift], None], rcvbuf: int = RCVBUF) -> None:
        self._owners = _Owners(scope)
        self.scope = scope
        self._notify = notify
        groups = RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE
        self._rt = _socket(NETLINK_ROUTE, groups | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE, rcvbuf)
        # Events of every namespace that has an id here, each tagged with it: our containers' without a
        # socket in each (which would also keep a deleted namespace, and its veth, alive).
        self._rt.setsockopt(SOL_NETLINK, NETLINK_LISTEN_ALL_NSID, 1)
        self._nf = _socket(NETLINK_NETFILTER, 1 << (NFNLGRP_NFTABLES - 1), rcvbuf)
        self._ports = _OwnPorts()
        self._ids = _NamespaceIds()
        self._containers: dict[int, str] = {}  # namespace id -> container, replaced whole by `follow`
        self._looks: dict[tuple[int, int], bytes] = {}
        self._dump_seq = 0
        self._dumping = self._dump_again = self.seeded = False
        self._probe_seq = PROBE_SEQ
        self._acked: set[socket.socket] = set()  # the sockets the last probe came back on
        self._caught_up = threading.Condition()
        self._seed()
        self._thread = threading.Thread(target=self._run, name="netlink-events", daemon=True)

    def _seed(self) -> None:
        """Ask for every link: the replies come through the event socket and only fill `_owners`.
        Until the dump is done an event on an unknown index cannot be told ours or not: it counts
        as lost (a full resync). One dump at a time (the kernel refuses a second): asked for during
        one, another follows it."""
        self.seeded = False
        if self._dumping:
            self._dump_again = True
            return
        self._dumping = True
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

    def follow(self, namespaces: dict[str, str], only: frozenset[str] | None = None) -> None:
        """Attribute events of these namespaces (path -> container) from now on. Called before each
        observation: a change made earlier is seen by that observation, a later one is reported.
        `only`: an observation of these containers alone (a part's apply and its verification): only
        their namespaces are looked up again, the others' ids stay as the last follow found them."""
        if only is None:
            self._containers = self._ids.of(namespaces)
            return
        again = {path: c for path, c in namespaces.items() if c in only}
        kept = {nsid: c for nsid, c in self._containers.items() if c not in only}
        self._containers = kept | self._ids.of(again, keep=True)

    def start(self) -> None:
        self._thread.start()

    def catch_up(self, timeout: float = CATCH_UP_TIMEOUT) -> bool:
        """Wait until the thread has read every event the kernel queued before this call: the
        acknowledgement of a no-op request, queued behind them on each socket, came through. An
        observation started after this sees every change those events report (the echoes of an
        apply, which the kernel queues before the call that made the change returns), so it can
        answer their hints. False after `timeout`: a later observation answers them instead."""
        with self._caught_up:
            self._probe_seq += 1
            seq, self._acked = self._probe_seq, set()
        try:
            for sock in (self._rt, self._nf):
                sock.send(struct.pack("=IHHII", 16, NLMSG_NOOP, NLM_F_REQUEST | NLM_F_ACK, seq, 0))
        except OSError:
            return False  # the hints are then answered later, as without a catch-up
        with self._caught_up:
            return self._caught_up.wait_for(lambda: len(self._acked) == 2, timeout)

    def _acknowledged(self, sock: socket.socket, seq: int) -> None:
        with self._caught_up:
            if seq == self._probe_seq:
                self._acked.add(sock)
                self._caught_up.notify_all()

    def _run(self) -> None:
        while True:
            ready, _, _ = select.select([self._rt, self._nf], [], [])
            for sock in ready:
                try:
                    data, ancillary, _, _ = sock.recvmsg(1 << 20, socket.CMSG_SPACE(4))
                except OSError as e:
                    if e.errno != errno.ENOBUFS:
                        raise
                    self._lost(sock)
                    continue
                self._handle(sock, data, _nsid(ancillary), time.monotonic())

    def _lost(self, sock: socket.socket) -> None:
        """The kernel dropped events: nothing short of a full observe knows what changed, and the
        index -> owner map may have missed links."""
        self._notify(Drift(time.monotonic(), full=True))
        if sock is self._rt:
            self._seed()

    def _dumped(self, done: bool) -> None:
        self._dumping = False
        if not done:  # the dump failed: assume the worst, ask again
            self._notify(Drift(time.monotonic(), full=True))
        if self._dump_again or not done:
            self._dump_again = False
            self._seed()
        else:
            self.seeded = True

    def _handle(self, sock: socket.socket, data: bytes, nsid: int | None, at: float) -> None:
        # One datagram's hints, each sent once: a re-created table's 2,000 element messages come
        # as a few datagrams, and a hint each kept the daemon's loop busy.
        hints: dict[Drift, None] = {}
        if sock is self._nf:
            self._ports.forget_others()
        for msg_type, seq, port, body in _messages(data):
            if msg_type in (rtnl.NLMSG_ERROR, rtnl.NLMSG_DONE):
                if nsid is not None:
                    continue
                if seq >= PROBE_SEQ:
                    self._send(hints)  # the events before the acknowledgement, reported before it
                    self._acknowledged(sock, seq)
                elif sock is self._rt and seq == self._dump_seq:
                    self._dumped(msg_type == rtnl.NLMSG_DONE)
                continue
            if sock is self._nf:
                hint = self._netfilter(msg_type, body, at)
                if hint is not None and self._ports.ours(port):
                    hint = None  # our own commit: verified by the apply that made it
            elif nsid is None:
                hint = self._route(msg_type, seq, body, at)
            else:
                hint = self._in_container(nsid, msg_type, body, at)
            if hint is not None:
                hints[hint] = None
        self._send(hints)

    def _send(self, hints: dict[Drift, None]) -> None:
        for hint in hints:
            self._notify(hint)
        hints.clear()

    def _in_container(self, nsid: int, msg_type: int, body: bytes, at: float) -> Drift | None:
        """Inside a container's namespace everything of the scope's kinds is ours: any change to a
        link's managed attributes, any IPv4 address or route. Neighbours there are ARP's business."""
        container = self._containers.get(nsid)
        if container is None or msg_type in (RTM_NEWNEIGH, RTM_DELNEIGH) or _kernel_ipv6(msg_type, body):
            return None
        if msg_type in (RTM_NEWLINK, RTM_DELLINK):
            if len(body) < 16 or body[0] != socket.AF_UNSPEC:
                return None
            index, flags = struct.unpack_from("=iI", body, 4)
            attrs = rtnl.attrs(body, 16)
            looks = bytes([flags & IFF_UP]) + b"|".join(attrs.get(a, b"") for a in LINK_MANAGED)
            seen = self._looks.pop((nsid, index), None)
            if msg_type == RTM_NEWLINK:
                self._looks[(nsid, index)] = looks
                if looks == seen:
                    return None
        return Drift(at, containers=frozenset({container}))

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
            if seq == self._dump_seq:
                return None
            return hint or self._unknown(at)
        if msg_type in (RTM_NEWADDR, RTM_DELADDR) and len(body) >= 8:
            if body[0] == socket.AF_INET6 and body[3] == RT_SCOPE_LINK:
                return None  # the kernel's own link-local address (and its DAD), not ours
            return self._owners.owned(struct.unpack_from("=I", body, 4)[0], at) or self._unknown(at)
        if msg_type in (RTM_NEWROUTE, RTM_DELROUTE) and len(body) >= 12:
            if body[0] == socket.AF_INET6 and body[5] != names.RTPROT:
                return None  # the kernel's per-link IPv6 routes (fe80::/64, multicast); ours carry RTPROT
            oif = rtnl.attrs(body, 12).get(RTA_OIF)
            if not oif or len(oif) < 4:
                return None
            return self._owners.owned(struct.unpack_from("=I", oif)[0], at) or self._unknown(at)
        if msg_type in (RTM_NEWNEIGH, RTM_DELNEIGH) and len(body) >= 12:
            index, state = struct.unpack_from("=iH", body, 4)
            # Every entry on our VXLAN devices is ours, and a deleted one is announced as FAILED.
            overlay = self._owners.by_index.get(index, ("", "", ""))[1] == "vxlan"
            hint = self._owners.owned(index, at) if state & NUD_PERMANENT or overlay else None
            # Only overlay entries are named: others (a bridge port's own FDB entry) are echoes of
            # the link changes that made them.
            return hint and dataclasses.replace(hint, entries=frozenset(_entry(body) if overlay else ()))
        return None

    def _unknown(self, at: float) -> Drift | None:
        """An event on no link of ours: not ours once the owner map is seeded, anything before."""
        return None if self.seeded else Drift(at, full=True)

    def _netfilter(self, msg_type: int, body: bytes, at: float) -> Drift | None:
        if msg_type >> 8 != NFNL_SUBSYS_NFTABLES or msg_type & 0xFF == NFT_MSG_NEWGEN or len(body) < 4:
            return None
        # Attribute 1 is the table's name in every nf_tables message that belongs to a table.
        table = rtnl.attrs(body, 4).get(1)
        if table is None or (body[0], table.rstrip(b"\0").decode(errors="replace")) not in self._tables:
            return None
        return Drift(at, nft=True)


def _messages(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """(type, sequence number, sender's port id, payload) of each message in one datagram."""
    offset = 0
    while offset + 16 <= len(data):
        size, kind, _, seq, port = struct.unpack_from("=IHHII", data, offset)
        if size < 16:
            return
        yield kind, seq, port, data[offset + 16 : offset + size]
        offset += (size + 3) & ~3


class _OwnPorts:
    """Whether a netlink port id is one of this process's sockets' (libnftables' among them). Port
    ids are unique among a namespace's sockets of one protocol while they are bound: a port that is
    ours now committed the batch it stamped (its changes come before this is asked). Looked up in
    /proc when a port that changed our tables is not known to be ours: a new libnftables context,
    or someone else's commit (once a datagram: a table's 2,000 element messages come as a few)."""

    def __init__(self) -> None:
        self._ours: set[int] = set()
        self._others: set[int] = set()

    def forget_others(self) -> None:
        self._others.clear()

    def ours(self, port: int) -> bool:
        if port in self._ours:
            return True
        if port in self._others:
            return False
        self._ours = _netfilter_ports()
        if port in self._ours:
            return True
        self._others.add(port)
        return False


def _netfilter_ports() -> set[int]:
    """The port ids of this process's NETLINK_NETFILTER sockets (its fds' inodes in this namespace's
    /proc/net/netlink)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    with open("/proc/self/net/netlink") as table:
        next(table)  # the header
        for line in table:
            fields = line.split()
            if len(fields) >= 10 and fields[1] == str(NETLINK_NETFILTER) and fields[9] in inodes:
                ports.add(int(fields[2]))
    return ports


def _kernel_ipv6(msg_type: int, body: bytes) -> bool:
    """What the kernel adds by itself once an interface is up, and nothing we compare: IPv6
    link-local addresses and their link and multicast routes. Inside a container they come after
    the apply that brought its interface up (DAD), too late to pass for its echo."""
    if msg_type in (RTM_NEWADDR, RTM_DELADDR):
        return len(body) >= 8 and body[0] == socket.AF_INET6 and body[3] == RT_SCOPE_LINK
    if msg_type in (RTM_NEWROUTE, RTM_DELROUTE):
        return len(body) >= 12 and body[0] == socket.AF_INET6 and body[5] == RTPROT_KERNEL
    return False


def _entry(body: bytes) -> list[str]:
    """The key of a neighbour event's entry as the overlay model names it: "fdb/MAC" for a bridge FDB
    entry, "neigh/IP" for a neighbour of either family."""
    attrs = rtnl.attrs(body, 12)
    if body[0] == AF_BRIDGE and len(mac := attrs.get(NDA_LLADDR, b"")) == 6:
        return ["fdb/" + ":".join(f"{b:02x}" for b in mac)]
    ip = attrs.get(NDA_DST, b"")
    if (body[0], len(ip)) in ((socket.AF_INET, 4), (socket.AF_INET6, 16)):
        return ["neigh/" + socket.inet_ntop(body[0], ip)]
    return []


def _nsid(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    """The id of the namespace an event comes from; None for this (the host) namespace."""
    for level, kind, data in ancillary:
        if level == SOL_NETLINK and kind == NETLINK_LISTEN_ALL_NSID and len(data) >= 4:
            nsid: int = struct.unpack_from("=i", data)[0]
            return nsid
    return None


class _NamespaceIds:
    """Namespace path -> its id in the host namespace (assigned when it has none, as `ip netns set
    NAME auto` does), kept while the path names the same namespace."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self._sock.bind((0, 0))
        self._seq = 0
        self._known: dict[tuple[int, int], int] = {}

    def of(self, namespaces: dict[str, str], *, keep: bool = False) -> dict[int, str]:
        """The ids of these namespaces; `keep`: remember the ids found before too (a part's lookup)."""
        out: dict[int, str] = {}
        known: dict[tuple[int, int], int] = dict(self._known) if keep else {}
        for path, container in namespaces.items():
            try:
                st = os.stat(path)
                nsid = self._known.get((st.st_dev, st.st_ino))
                if nsid is None:
                    nsid = self._assign(path)
            except OSError:
                continue  # not there (yet, or any more): nothing in it to follow
            known[(st.st_dev, st.st_ino)] = nsid
            out[nsid] = container
        self._known = known
        return out

    def _assign(self, path: str) -> int:
        fd = os.open(path, os.O_RDONLY)
        try:
            # EEXIST when it has an id already; EINVAL when PATH is no namespace (then GETNSID fails).
            with contextlib.suppress(OSError):
                self._request(RTM_NEWNSID, rtnl.attr(NETNSA_FD, fd) + rtnl.attr(NETNSA_NSID, NSID_AUTO))
            reply = self._request(RTM_GETNSID, rtnl.attr(NETNSA_FD, fd))
        finally:
            os.close(fd)
        nsid = rtnl.attrs(reply, 4).get(NETNSA_NSID)
        if nsid is None or len(nsid) < 4:
            raise OSError(errno.EINVAL, f"{path}: no namespace id")
        value: int = struct.unpack_from("=i", nsid)[0]
        return value

    def _request(self, kind: int, attrs: bytes) -> bytes:
        """Send one request, return the reply's payload (b"" for an ACK); raise OSError on an error."""
        self._seq += 1
        body = struct.pack("=Bxxx", socket.AF_UNSPEC) + attrs
        flags = NLM_F_REQUEST | (NLM_F_ACK if kind == RTM_NEWNSID else 0)
        self._sock.send(struct.pack("=IHHII", 16 + len(body), kind, flags, self._seq, 0) + body)
        while True:
            for msg_type, seq, payload in rtnl.messages(self._sock.recv(1 << 16)):
                if seq != self._seq:
                    continue
                if msg_type == rtnl.NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0]
                    if code:
                        raise OSError(code, os.strerror(code))
                    return b""
                return payload


def _socket(protocol: int, groups: int, rcvbuf: int) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
    # A burst (`nft flush ruleset` on a big table, 1,000 veths going) must not overflow the queue.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
    sock.bind((0, groups))
    return sock
