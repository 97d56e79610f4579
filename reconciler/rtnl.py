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
from collections.abc import Iterator
from dataclasses import dataclass, field

from . import fault

NETLINK_ROUTE = 0
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 1, 2, 4
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


def attrs(data: bytes, offset: int = 0, wanted: frozenset[int] | None = None) -> dict[int, bytes]:
    """Attribute type -> payload; only the `wanted` types when given (a link has some forty)."""
    out: dict[int, bytes] = {}
    end = len(data)
    unpack = _ATTR.unpack_from
    while offset + 4 <= end:
        size, kind = unpack(data, offset)
        if size < 4:
            break
        kind &= 0x3FFF
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


def _str(value: bytes | None) -> str | None:
    return value.rstrip(b"\0").decode() if value is not None else None


def _u32(value: bytes | None) -> int | None:
    return struct.unpack("=I", value[:4])[0] if value is not None else None


def ifinfo(index: int = 0, up: bool | None = None) -> bytes:
    flags, change = (IFF_UP if up else 0, IFF_UP) if up is not None else (0, 0)
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)


@dataclass
class LinkMsg:
    index: int
    flags: int
    attrs: dict[int, bytes]
    info: dict[int, bytes] = field(default_factory=dict)  # IFLA_LINKINFO's nested attributes

    @property
    def ifname(self) -> str:
        return _str(self.attrs.get(IFLA_IFNAME)) or ""

    @property
    def alias(self) -> str | None:
        return _str(self.attrs.get(IFLA_IFALIAS))

    @property
    def kind(self) -> str | None:
        return _str(self.info.get(IFLA_INFO_KIND))

    @property
    def master(self) -> int | None:
        return _u32(self.attrs.get(IFLA_MASTER))

    @property
    def mtu(self) -> int:
        return _u32(self.attrs.get(IFLA_MTU)) or 0

    @property
    def link(self) -> int | None:
        """A macvlan's or vlan's parent (its index in the link's own namespace, the host's for ours)."""
        return _u32(self.attrs.get(IFLA_LINK))

    @property
    def data(self) -> dict[int, bytes]:
        return attrs(self.info[IFLA_INFO_DATA]) if IFLA_INFO_DATA in self.info else {}

    @property
    def macvlan_mode(self) -> str | None:
        mode = _u32(self.data.get(IFLA_MACVLAN_MODE)) if self.kind == "macvlan" else None
        return next((name for name, value in MACVLAN_MODES.items() if value == mode), None)

    @property
    def vlan_id(self) -> int | None:
        vid = self.data.get(IFLA_VLAN_ID) if self.kind == "vlan" else None
        return struct.unpack("=H", vid[:2])[0] if vid else None

    @property
    def mac(self) -> str:
        return self.attrs.get(IFLA_ADDRESS, b"").hex(":")


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

    def _replies(self, seq: int) -> Iterator[tuple[int, bytes]]:
        """(type, payload) of the answer to `seq` until its ACK or DONE; raises on an error."""
        while True:
            data = self.sock.recv(1 << 16)
            offset = 0
            while offset + _HDR.size <= len(data):
                size, kind, _, got, _ = _HDR.unpack_from(data, offset)
                payload = data[offset + _HDR.size : offset + size]
                offset += (size + 3) & ~3
                if got != seq:
                    continue
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0]
                    if code:
                        raise NetlinkError(code, os.strerror(code))
                    return
                yield kind, payload

    def request(self, kind: int, body: bytes, flags: int = 0) -> None:
        """A request that changes the kernel: it counts as one kernel operation (see fault.py)."""
        for _ in self._replies(self._send(kind, flags | NLM_F_ACK, body)):
            pass
        fault.step()

    def dump(self, kind: int, body: bytes) -> Iterator[bytes]:
        for _, payload in self._replies(self._send(kind, NLM_F_DUMP, body)):
            yield payload

    # Links

    def links(self, ifname: str | None = None, *, kind: str | None = None, index: int = 0) -> list[LinkMsg]:
        """Every link, those of one `kind` (filtered by the kernel), or the one named `ifname` or
        numbered `index` ([] when there is none)."""
        if ifname is None and not index:
            only = attr(IFLA_LINKINFO, attr(IFLA_INFO_KIND, kind)) if kind else b""
            return [_link(p) for p in self.dump(RTM_GETLINK, ifinfo() + _SKIP_STATS + only)]
        try:
            # With an ACK requested the reply is followed by one, which ends the exchange.
            name = attr(IFLA_IFNAME, ifname) if ifname else b""
            seq = self._send(RTM_GETLINK, NLM_F_ACK, ifinfo(index) + name)
            return [_link(p) for _, p in self._replies(seq)]
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
        out = []
        for p in self.dump(RTM_GETADDR, _IFADDR.pack(family, 0, 0, 0, 0)):
            found, prefixlen, _, _, index = _IFADDR.unpack_from(p)
            if found not in (socket.AF_INET, socket.AF_INET6) or (family and found != family):
                continue
            a = attrs(p, _IFADDR.size, _ADDR_ATTRS)
            raw = a.get(IFA_ADDRESS) or a.get(IFA_LOCAL)
            # fe80:: left out before it is printed: every veth of the host has one.
            link_local = raw is not None and len(raw) == 16 and raw[:2] == _LINK_LOCAL
            if raw is not None and not link_local and (address := _ip(raw)):
                out.append(AddrMsg(index, prefixlen, address))
        return out

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
        out = []
        request = _RTMSG.pack(family, 0, 0, 0, RT_TABLE_MAIN, protocol, 0, 0, 0)
        for p in self.dump(RTM_GETROUTE, request):
            found, dst_len, _, _, table, proto, _, _, flags = _RTMSG.unpack_from(p)
            if (defaults and dst_len) or found not in (socket.AF_INET, socket.AF_INET6) or found != family:
                continue
            a = attrs(p, _RTMSG.size)
            table = _u32(a.get(RTA_TABLE)) or table
            if table != RT_TABLE_MAIN:
                continue
            gateway, oif = _ip(a.get(RTA_GATEWAY)), _u32(a.get(RTA_OIF))
            out.append(RouteMsg(_ip(a.get(RTA_DST)), dst_len, gateway, oif, proto, table, flags))
        return out

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


_ADDR_ATTRS = frozenset({IFA_ADDRESS, IFA_LOCAL})
_LINK_LOCAL = b"\xfe\x80"

# The link attributes observe uses; add to it to read more.
LINK_ATTRS = frozenset(
    {IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER, IFLA_LINKINFO, IFLA_IFALIAS}
)


def _link(payload: bytes) -> LinkMsg:
    _, _, index, flags, _ = _IFINFO.unpack_from(payload)
    a = attrs(payload, _IFINFO.size, LINK_ATTRS)
    info = attrs(a[IFLA_LINKINFO]) if IFLA_LINKINFO in a else {}
    return LinkMsg(index, flags, a, info)
