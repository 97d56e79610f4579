"""Plain rtnetlink over a raw socket: the few requests and dumps the bridge driver needs.

pyroute2 0.9 routes every request through an asyncio core that costs about 3 ms; the kernel answers
a request on a plain socket in tens of microseconds. So the hot paths (observing every namespace,
creating veths, addresses and routes) build and parse the messages here, and only the fields they use.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from . import fault

NETLINK_ROUTE = 0
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP_INTR = 1, 2, 4, 0x10
NLM_F_DUMP, NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x300, 0x100, 0x200, 0x400
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_LINKINFO, IFLA_IFALIAS, IFLA_NET_NS_FD, IFLA_EXT_MASK = 18, 20, 28, 29
RTEXT_FILTER_SKIP_STATS = 1 << 3
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFLA_MACVLAN_MODE, IFLA_VLAN_ID = 1, 1  # in IFLA_INFO_DATA of a macvlan / vlan link
MACVLAN_MODES = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8}
RTNH_F_ONLINK = 4
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFA_F_NODAD = 0x02  # our IPv6 addresses are ours alone: no duplicate detection, never tentative
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PREFSRC, RTA_TABLE = 1, 4, 5, 7, 15
IFF_UP = 1
SOL_NETLINK, NETLINK_GET_STRICT_CHK = 270, 12
RT_TABLE_MAIN, RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RTN_UNICAST = 254, 0, 253, 1

_HDR = struct.Struct("=IHHII")
_IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_ATTR = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_I32 = struct.Struct("=i")
_NLA_TYPE = 0x3FFF  # the type without NLA_F_NESTED and NLA_F_NET_BYTEORDER
# A dump that the kernel marked inconsistent (NLM_F_DUMP_INTR: the objects changed while it was being
# written) is read again, this many times at most.
DUMP_TRIES = 5


class NetlinkError(OSError):
    """The kernel refused a request; `code` is the errno, as in pyroute2's NetlinkError."""

    @property
    def code(self) -> int:
        return self.errno or 0


class Stats:
    """Requests sent and messages parsed, process-wide: the benchmark reports them per scenario."""

    requests = 0


def attr(kind: int, value: bytes | str | int) -> bytes:
    if isinstance(value, str):
        value = value.encode() + b"\0"
    elif isinstance(value, int):
        value = struct.pack("=I", value)
    size = _ATTR.size + len(value)
    return _ATTR.pack(size, kind) + value + b"\0" * (-size & 3)


_SKIP_STATS = attr(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)


def attrs(
    data: bytes, offset: int = 0, wanted: frozenset[int] | None = None, end: int | None = None
) -> dict[int, bytes]:
    """Attribute type -> payload of the attributes from `offset` to `end` (the data's end when None);
    only the `wanted` types when given. An attribute that overruns `end` ends the walk."""
    out: dict[int, bytes] = {}
    end = len(data) if end is None else end
    unpack = _ATTR.unpack_from
    while offset + 4 <= end:
        size, kind = unpack(data, offset)
        if size < 4 or offset + size > end:
            break
        kind &= _NLA_TYPE
        if wanted is None or kind in wanted:
            out[kind] = data[offset + 4 : offset + size]
        offset += (size + 3) & ~3
    return out


def messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, sequence number, payload) of each message in one datagram (e.g. multicast events)."""
    offset = 0
    while offset + _HDR.size <= len(data):
        size, kind, _, seq, _ = _HDR.unpack_from(data, offset)
        if size < _HDR.size:
            return
        yield kind, seq, data[offset + _HDR.size : offset + size]
        offset += (size + 3) & ~3


def dump_request(kind: int, seq: int, body: bytes) -> bytes:
    """A dump request, for a socket this module does not own (the watch daemon's event socket)."""
    return _HDR.pack(_HDR.size + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def ifinfo(index: int = 0, up: bool | None = None) -> bytes:
    flags, change = (IFF_UP if up else 0, IFF_UP) if up is not None else (0, 0)
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)


# One message of an answer: its type, its flags, the datagram it is in and where its payload starts
# and ends there. Payloads stay in their datagram: the parsers below read the few attributes they use
# in place, and skip the rest (a link has some forty) without copying them.
Msg = tuple[int, int, bytes, int, int]


def answer_part(data: bytes, seq: int, out: list[Msg]) -> int | None:
    """Add to `out` the messages of one datagram that answer request `seq`; once the answer is complete
    (its NLMSG_DONE, or the NLMSG_ERROR acknowledging a request) the flags of that last message, else
    None. Raises the kernel's error: an NLMSG_ERROR's code, or a DONE's (a dump that failed part way)."""
    offset, total = 0, len(data)
    unpack = _HDR.unpack_from
    while offset + _HDR.size <= total:
        size, kind, flags, got, _ = unpack(data, offset)
        if size < _HDR.size or offset + size > total:
            break  # a truncated message: nothing after it can be found
        if got == seq:
            if kind in (NLMSG_DONE, NLMSG_ERROR):
                code = -_I32.unpack_from(data, offset + _HDR.size)[0] if size >= _HDR.size + 4 else 0
                if code > 0:
                    raise NetlinkError(code, os.strerror(code))
                last: int = flags
                return last
            out.append((kind, flags, data, offset + _HDR.size, offset + size))
        offset += (size + 3) & ~3
    return None


@dataclass(slots=True)
class LinkMsg:
    """A link as the kernel describes it: the attributes observe and the drivers read of it."""

    index: int
    flags: int
    ifname: str = ""
    alias: str | None = None
    kind: str | None = None  # IFLA_INFO_KIND
    master: int | None = None
    mtu: int = 0
    # A macvlan's or vlan's parent (its index in the link's own namespace, the host's for ours).
    link: int | None = None
    mac: str = ""
    info_data: bytes = b""  # IFLA_INFO_DATA, the kind's own attributes

    @property
    def macvlan_mode(self) -> str | None:
        if self.kind != "macvlan":
            return None
        mode = attrs(self.info_data).get(IFLA_MACVLAN_MODE)
        value = _U32.unpack_from(mode)[0] if mode is not None and len(mode) >= 4 else None
        return next((name for name, known in MACVLAN_MODES.items() if known == value), None)

    @property
    def vlan_id(self) -> int | None:
        vid = attrs(self.info_data).get(IFLA_VLAN_ID) if self.kind == "vlan" else None
        return struct.unpack_from("=H", vid)[0] if vid is not None and len(vid) >= 2 else None


@dataclass
class AddrMsg:
    index: int
    prefixlen: int
    address: str


@dataclass
class RouteMsg:
    dst: str | None
    dst_len: int
    gateway: str | None
    oif: int | None
    proto: int
    table: int
    flags: int = 0


def _ip(value: bytes | None) -> str | None:
    if value is None or len(value) not in (4, 16):
        return None
    return socket.inet_ntop(socket.AF_INET if len(value) == 4 else socket.AF_INET6, value)


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _pack(address: str) -> bytes:
    return socket.inet_pton(_family(address), address)


class Rtnl:
    """One rtnetlink socket (in the namespace its descriptor was created in)."""

    def __init__(self, fileno: int | None = None) -> None:
        if fileno is None:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        else:
            self.sock = socket.socket(fileno=fileno)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        # Strict checking lets a dump filter in the kernel (routes by table), so fewer messages to parse.
        self.sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
        self.sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, kind: int, flags: int, body: bytes) -> int:
        self._seq += 1
        self.sock.send(_HDR.pack(_HDR.size + len(body), kind, flags | NLM_F_REQUEST, self._seq, 0) + body)
        Stats.requests += 1
        return self._seq

    def _read(self, seq: int) -> tuple[list[Msg], int]:
        """The messages answering `seq` up to its DONE or ACK, and the flags of that last one; raises
        on an error."""
        out: list[Msg] = []
        recv = self.sock.recv
        while (last := answer_part(recv(_RECV), seq, out)) is None:
            pass
        return out, last

    def _dump(self, kind: int, body: bytes) -> list[Msg]:
        """A dump's messages; read again when the kernel marks it inconsistent (its objects changed
        while it was being written: one may be missing or appear twice)."""
        for _ in range(DUMP_TRIES):
            out, last = self._read(self._send(kind, NLM_F_DUMP, body))
            if not last & NLM_F_DUMP_INTR and not any(m[1] & NLM_F_DUMP_INTR for m in out):
                return out
        raise NetlinkError(
            errno.EAGAIN, f"netlink dump of type {kind}: the kernel's objects kept changing under it"
        )

    def request(self, kind: int, body: bytes, flags: int = 0) -> None:
        """A request that changes the kernel: it counts as one kernel operation (see fault.py)."""
        self._read(self._send(kind, flags | NLM_F_ACK, body))
        fault.step()

    def dump(self, kind: int, body: bytes) -> Iterator[bytes]:
        for _, _, data, start, end in self._dump(kind, body):
            yield data[start:end]

    # Links

    def links(self, ifname: str | None = None, *, kind: str | None = None, index: int = 0) -> list[LinkMsg]:
        """Every link, those of one `kind` (filtered by the kernel), or the one named `ifname` or
        numbered `index` ([] when there is none)."""
        if ifname is None and not index:
            only = attr(IFLA_LINKINFO, attr(IFLA_INFO_KIND, kind)) if kind else b""
            return parse_links(self._dump(RTM_GETLINK, ifinfo() + _SKIP_STATS + only))
        try:
            # With an ACK requested the reply is followed by one, which ends the exchange.
            name = attr(IFLA_IFNAME, ifname) if ifname else b""
            return parse_links(self._read(self._send(RTM_GETLINK, NLM_F_ACK, ifinfo(index) + name))[0])
        except NetlinkError as e:
            if e.code == errno.ENODEV:
                return []
            raise

    def ifindex(self, ifname: str) -> int | None:
        found = self.links(ifname)
        return found[0].index if found else None

    def set_link(
        self, index: int = 0, *extra: bytes, ifname: str | None = None, up: bool | None = None
    ) -> None:
        """Change a link by index, or by name when `index` is 0; `extra` are IFLA_ attributes."""
        name = attr(IFLA_IFNAME, ifname) if ifname and not index else b""
        self.request(RTM_NEWLINK, ifinfo(index, up) + name + b"".join(extra))

    def add_link(
        self, ifname: str, kind: str, *extra: bytes, data: bytes = b"", up: bool | None = None
    ) -> None:
        info = attr(IFLA_INFO_KIND, kind) + (attr(IFLA_INFO_DATA, data) if data else b"")
        body = ifinfo(up=up) + attr(IFLA_IFNAME, ifname) + attr(IFLA_LINKINFO, info) + b"".join(extra)
        self.request(RTM_NEWLINK, body, NLM_F_CREATE | NLM_F_EXCL)

    def add_veth(self, ifname: str, peer: bytes, *extra: bytes, up: bool | None = None) -> None:
        """A veth pair; `peer` is the peer's attributes (IFLA_IFNAME, IFLA_NET_NS_FD, ...)."""
        self.add_link(ifname, "veth", *extra, data=attr(VETH_INFO_PEER, ifinfo(up=up) + peer), up=up)

    def del_link(self, index: int) -> None:
        self.request(RTM_DELLINK, ifinfo(index))

    # Addresses

    def addresses(self, family: int = socket.AF_INET) -> list[AddrMsg]:
        """One family's addresses, or (AF_UNSPEC) both in one dump; IPv6 link-local ones left out:
        the kernel makes them itself and they are nobody's configuration."""
        return parse_addresses(self._dump(RTM_GETADDR, _IFADDR.pack(family, 0, 0, 0, 0)), family)

    def add_address(self, index: int, address: str, prefixlen: int) -> None:
        family, packed = _family(address), _pack(address)
        flags = IFA_F_NODAD if family == socket.AF_INET6 else 0
        body = _IFADDR.pack(family, prefixlen, flags, 0, index)
        body += attr(IFA_LOCAL, packed) + attr(IFA_ADDRESS, packed)
        self.request(RTM_NEWADDR, body, NLM_F_CREATE | NLM_F_EXCL)

    def del_address(self, index: int, address: str, prefixlen: int) -> None:
        body = _IFADDR.pack(_family(address), prefixlen, 0, 0, index) + attr(IFA_LOCAL, _pack(address))
        self.request(RTM_DELADDR, body)

    def flush_addresses(self, index: int) -> None:
        for a in self.addresses(socket.AF_UNSPEC):
            if a.index == index:
                self.del_address(index, a.address, a.prefixlen)

    # Routes (main table; IPv4 unless asked for both families)

    def routes(
        self, family: int = socket.AF_INET, *, defaults: bool = False, protocol: int = 0
    ) -> list[RouteMsg]:
        """The main table's routes; `defaults`: only default routes (the others are left unparsed: a
        host has a link-local IPv6 route per veth); `protocol`: only those of this protocol (a filter
        the kernel applies)."""
        if family == socket.AF_UNSPEC:
            # One dump per family: the kernel answers an AF_UNSPEC route dump (rtnl_dump_all) under the
            # RTNL lock, which every namespace made or freed anywhere on the host holds for a while;
            # the IPv4 and IPv6 dumps take no lock. With namespaces churning beside it, 1,000 of them
            # took 107 ms against 72 ms for twice as many per-family ones.
            both = (socket.AF_INET, socket.AF_INET6)
            return [r for f in both for r in self.routes(f, defaults=defaults, protocol=protocol)]
        request = _RTMSG.pack(family, 0, 0, 0, RT_TABLE_MAIN, protocol, 0, 0, 0)
        return parse_routes(self._dump(RTM_GETROUTE, request), family, defaults=defaults)

    def _default_route(self, gateway: str, oif: int | None, proto: int, flags: int = 0) -> bytes:
        scope = RT_SCOPE_UNIVERSE
        body = _RTMSG.pack(_family(gateway), 0, 0, 0, RT_TABLE_MAIN, proto, scope, RTN_UNICAST, flags)
        body += attr(RTA_GATEWAY, _pack(gateway))
        return body + (attr(RTA_OIF, oif) if oif else b"")

    def replace_default_route(self, gateway: str, oif: int, proto: int, onlink: bool = False) -> None:
        body = self._default_route(gateway, oif, proto, RTNH_F_ONLINK if onlink else 0)
        self.request(RTM_NEWROUTE, body, NLM_F_CREATE | NLM_F_REPLACE)

    def del_default_route(self, gateway: str) -> None:
        self.request(RTM_DELROUTE, self._default_route(gateway, None, 0))

    def _link_route(self, dst: str, dst_len: int, oif: int, proto: int) -> bytes:
        body = _RTMSG.pack(_family(dst), dst_len, 0, 0, RT_TABLE_MAIN, proto, RT_SCOPE_LINK, RTN_UNICAST, 0)
        return body + attr(RTA_DST, _pack(dst)) + attr(RTA_OIF, oif)

    def replace_link_route(self, dst: str, dst_len: int, oif: int, proto: int, src: str | None) -> None:
        """`dst/dst_len dev oif scope link [src src]`."""
        body = self._link_route(dst, dst_len, oif, proto)
        body += attr(RTA_PREFSRC, _pack(src)) if src else b""
        self.request(RTM_NEWROUTE, body, NLM_F_CREATE | NLM_F_REPLACE)

    def del_link_route(self, dst: str, dst_len: int, oif: int) -> None:
        self.request(RTM_DELROUTE, self._link_route(dst, dst_len, oif, 0))


_RECV = 1 << 16


def parse_links(msgs: list[Msg]) -> list[LinkMsg]:
    return [_link(data, start, end) for kind, _, data, start, end in msgs if kind == RTM_NEWLINK]


# The link attributes `_link` reads.
_LINK_ATTRS = frozenset(
    {IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER, IFLA_LINKINFO, IFLA_IFALIAS}
)


def _link(data: bytes, start: int, end: int) -> LinkMsg:
    """The link message whose payload is data[start:end]."""
    _, _, index, flags, _ = _IFINFO.unpack_from(data, start)
    msg = LinkMsg(index, flags)
    kinds, values = LAYOUTS.read(data, start + _IFINFO.size, end)
    for kind, value in zip(kinds, values, strict=True):
        if kind == IFLA_IFNAME:
            msg.ifname = value.partition(b"\0")[0].decode()
        elif kind == IFLA_MTU:
            msg.mtu = _U32.unpack_from(value)[0]
        elif kind == IFLA_ADDRESS:
            msg.mac = value.hex(":")
        elif kind == IFLA_IFALIAS:
            msg.alias = value.partition(b"\0")[0].decode()
        elif kind == IFLA_MASTER:
            msg.master = _U32.unpack_from(value)[0]
        elif kind == IFLA_LINK:
            msg.link = _U32.unpack_from(value)[0]
        else:
            info = attrs(value)
            if IFLA_INFO_KIND in info:
                msg.kind = info[IFLA_INFO_KIND].partition(b"\0")[0].decode()
            msg.info_data = info.get(IFLA_INFO_DATA, b"")
    return msg


class Layouts:
    """Link messages' layouts, compiled: a link's attributes (some forty) come from the kernel in
    the same order and sizes for every link of one kind, name length and alias length, so the walk
    over them, attribute by attribute in Python, is most of what parsing a link costs. A layout seen
    twice is compiled into two `struct` formats: one that reads every attribute header at the offset
    the sizes before it give, one that reads the attributes `_link` wants; the next link of that
    layout is read by both in C. Its headers equal to the layout's prove the layout (the chain of
    sizes from the first attribute to the message's end is the same): a message of any other layout
    differs in a header and is walked."""

    # Bounds what a long-running process (the daemon) keeps of a host with many layouts.
    LIMIT = 64

    def __init__(self, wanted: frozenset[int]) -> None:
        self._wanted = wanted
        # Payload size -> (headers' format, the headers, wanted payloads' format, their types).
        self._compiled: dict[int, list[tuple[struct.Struct, tuple[int, ...], struct.Struct, tuple[int, ...]]]]
        self._compiled = {}
        self._seen: set[int] = set()  # payload sizes walked once
        self.count = 0

    def read(self, data: bytes, start: int, end: int) -> tuple[Sequence[int], Sequence[bytes]]:
        """The wanted attributes of data[start:end]: their types, and their payloads (padding cut)."""
        for heads, expected, values, kinds in self._compiled.get(end - start, ()):
            if heads.unpack_from(data, start) == expected:
                return kinds, values.unpack_from(data, start)
        return self._walk(data, start, end)

    def _walk(self, data: bytes, start: int, end: int) -> tuple[Sequence[int], Sequence[bytes]]:
        """The attribute by attribute walk; it stops at a malformed attribute (shorter than its
        header or overrunning the message), and compiles the layout on its second sight."""
        kinds: list[int] = []
        values: list[bytes] = []
        heads: list[tuple[int, int, int, bool]] = []  # each attribute's offset, size, type, wanted
        unpack, wanted = _ATTR.unpack_from, self._wanted
        offset = start
        while offset + 4 <= end:
            size, kind = unpack(data, offset)
            if size < 4 or offset + size > end:
                return kinds, values  # unlearned: a layout is compiled from well-formed messages only
            is_wanted = kind & _NLA_TYPE in wanted
            if is_wanted:
                kinds.append(kind & _NLA_TYPE)
                values.append(data[offset + 4 : offset + size])
            heads.append((offset, size, kind, is_wanted))
            offset += (size + 3) & ~3
        if self.count < self.LIMIT:
            if end - start in self._seen:
                self._learn(start, end, heads, tuple(kinds))
            self._seen.add(end - start)
        return kinds, values

    def _learn(
        self, start: int, end: int, heads: list[tuple[int, int, int, bool]], kinds: tuple[int, ...]
    ) -> None:
        head_format, value_format, expected = ["="], ["="], list[int]()
        head_at = value_at = start  # where the formats have read up to
        for offset, size, kind, is_wanted in heads:
            head_format.append(f"{offset - head_at}xHH")
            head_at = offset + 4
            expected += (size, kind)
            if is_wanted:
                value_format.append(f"{offset + 4 - value_at}x{size - 4}s")
                value_at = offset + size
        compiled = (
            struct.Struct("".join(head_format)),
            tuple(expected),
            struct.Struct("".join(value_format)),
            kinds,
        )
        self._compiled.setdefault(end - start, []).append(compiled)
        self.count += 1


LAYOUTS = Layouts(_LINK_ATTRS)


def parse_addresses(msgs: list[Msg], family: int = socket.AF_UNSPEC) -> list[AddrMsg]:
    """The addresses of `family` (both for AF_UNSPEC) but IPv6 link-local ones, as `addresses`."""
    out = []
    unpack = _ATTR.unpack_from
    for kind, _, data, start, end in msgs:
        if kind != RTM_NEWADDR:
            continue
        found, prefixlen, _, _, index = _IFADDR.unpack_from(data, start)
        if found not in (socket.AF_INET, socket.AF_INET6) or (family and found != family):
            continue
        raw = None  # IFA_ADDRESS, or IFA_LOCAL when there is none
        offset = start + _IFADDR.size
        while offset + 4 <= end:
            size, attr_kind = unpack(data, offset)
            if size < 4 or offset + size > end:
                break
            attr_kind &= _NLA_TYPE
            if attr_kind == IFA_ADDRESS:
                raw = data[offset + 4 : offset + size]
                break
            if attr_kind == IFA_LOCAL:
                raw = data[offset + 4 : offset + size]
            offset += (size + 3) & ~3
        # fe80:: left out before it is printed: every veth of the host has one.
        if raw is not None and not (len(raw) == 16 and raw[:2] == _LINK_LOCAL) and (address := _ip(raw)):
            out.append(AddrMsg(index, prefixlen, address))
    return out


def parse_routes(msgs: list[Msg], family: int, *, defaults: bool = False) -> list[RouteMsg]:
    """The main table's routes of `family`; `defaults`: only default routes, the others unparsed."""
    out = []
    unpack = _ATTR.unpack_from
    for kind, _, data, start, end in msgs:
        if kind != RTM_NEWROUTE:
            continue
        found, dst_len, _, _, table, proto, _, _, flags = _RTMSG.unpack_from(data, start)
        if (defaults and dst_len) or found != family:
            continue
        dst = gateway = oif = None
        offset = start + _RTMSG.size
        while offset + 4 <= end:
            size, attr_kind = unpack(data, offset)
            if size < 4 or offset + size > end:
                break
            attr_kind &= _NLA_TYPE
            if attr_kind == RTA_TABLE:
                table = _U32.unpack_from(data, offset + 4)[0]
            elif attr_kind == RTA_DST:
                dst = data[offset + 4 : offset + size]
            elif attr_kind == RTA_GATEWAY:
                gateway = data[offset + 4 : offset + size]
            elif attr_kind == RTA_OIF:
                oif = _U32.unpack_from(data, offset + 4)[0]
            offset += (size + 3) & ~3
        if table == RT_TABLE_MAIN:
            out.append(RouteMsg(_ip(dst), dst_len, _ip(gateway), oif, proto, table, flags))
    return out


_LINK_LOCAL = b"\xfe\x80"
