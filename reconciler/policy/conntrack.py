"""Cutting the connections a policy change no longer allows: conntrack entries deleted over
ctnetlink, as kube-network-policies' sweeper does.

The rules only judge a connection's first packet; an established one passes on its conntrack entry.
So after a transaction that changed policy elements, the host's entries are dumped once and each
connection to a selected address is judged again against the sets as the kernel now holds them; the
ones no element admits are deleted in one batch of netlink messages. Their next packet is then
judged as new, and dropped. Connections the host itself opened are not policy's (the rules judge
forwarded traffic only) and are left alone.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import ApplyFailed
from ..nft import Nft
from ..rtnl import NLMSG_ERROR, Rtnl, attr, attrs
from .intervals import Span
from .nft import FAMILY, set_name

NETLINK_NETFILTER = 12
_CT_GET, _CT_DELETE = (1 << 8) | 1, (1 << 8) | 2  # NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_*
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_ZONE = 1, 2, 18
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
NLA_F_NESTED = 0x8000
NLM_F_REQUEST, NLM_F_ACK = 1, 4
_NFGEN = struct.Struct("=BBH")
_HDR = struct.Struct("=IHHII")
PROTOCOLS = {6: "tcp", 17: "udp", 132: "sctp", 1: "icmp", 58: "ipv6-icmp"}
BATCH_BYTES = 1 << 16


@dataclass(frozen=True)
class Flow:
    """A conntrack entry: its original tuple, and the destination after DNAT (the reply's source)."""

    family: int
    client: ipaddress.IPv4Address | ipaddress.IPv6Address
    server: ipaddress.IPv4Address | ipaddress.IPv6Address
    protocol: int
    port: int  # the server's port after DNAT (0 for protocols without ports)
    orig: bytes  # the original tuple, as the kernel sent it: what a delete names
    zone: bytes | None


class Allowed:
    """The policy sets as listed from the kernel, to judge a flow as the chain would."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.sets: dict[str, list[Any]] = {}
        for obj in objects:
            body = obj.get("set")
            if body is not None:
                self.sets[body["name"]] = body.get("elem", [])
        self._index: dict[str, dict[str, list[list[Span | str]]]] = {}

    def admits(self, flow: Flow) -> bool:
        version = flow.server.version
        server = str(flow.server)
        if server not in self.sets.get(set_name("pol_sel", version), []):
            return True
        if str(flow.client) in self.sets.get(set_name("pol_nodes", version), []):
            return True
        client = int(flow.client)
        for fields in self._by_server(set_name("pol_any", version)).get(server, []):
            if _inside(client, fields[0]):
                return True
        protocol = PROTOCOLS.get(flow.protocol, str(flow.protocol))
        for fields in self._by_server(set_name("pol_ports", version)).get(server, []):
            if fields[1] == protocol and _inside(client, fields[0]) and _inside(flow.port, fields[2]):
                return True
        return False

    def _by_server(self, name: str) -> dict[str, list[list[Span | str]]]:
        if name not in self._index:
            index: dict[str, list[list[Span | str]]] = {}
            for elem in self.sets.get(name, []):
                dst, *rest = elem["concat"]
                index.setdefault(str(dst), []).append([_span(v) for v in rest])
            self._index[name] = index
        return self._index[name]


def _span(value: Any) -> Span | str:
    """An element field: an address, prefix, port or range as a span; a protocol name as it is."""
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, dict) and "prefix" in value:
        net = ipaddress.ip_network(f"{value['prefix']['addr']}/{value['prefix']['len']}")
        return (int(net.network_address), int(net.broadcast_address))
    if isinstance(value, dict) and "range" in value:
        lo, hi = value["range"]
        if isinstance(lo, int):
            return (lo, hi)
        return (int(ipaddress.ip_address(lo)), int(ipaddress.ip_address(hi)))
    try:
        return (int(ipaddress.ip_address(value)),) * 2
    except ValueError:
        return str(value)


def _inside(value: int, span: Span | str) -> bool:
    return isinstance(span, tuple) and span[0] <= value <= span[1]


def sweep(nft: Nft, table: str) -> int:
    """Deletes the entries of connections the policy sets no longer admit; returns how many."""
    objects = nft.list_table(FAMILY, table)
    if objects is None:
        return 0
    allowed = Allowed(objects)
    with Rtnl() as route:
        local = {ipaddress.ip_address(a.address) for a in route.addresses(socket.AF_UNSPEC)}
    with _socket() as sock:
        doomed = [f for f in flows(sock) if f.client not in local and not allowed.admits(f)]
        delete(sock, doomed)
    return len(doomed)


def _socket() -> Rtnl:
    return Rtnl(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER).detach())


def flows(sock: Rtnl) -> Iterator[Flow]:
    """Every entry of the namespace's conntrack table, both families, in one dump."""
    for payload in sock.dump(_CT_GET, _NFGEN.pack(socket.AF_UNSPEC, 0, 0)):
        family = payload[0]
        top = attrs(payload, _NFGEN.size)
        orig, reply = top.get(CTA_TUPLE_ORIG), top.get(CTA_TUPLE_REPLY)
        if orig is None or reply is None or family not in (socket.AF_INET, socket.AF_INET6):
            continue
        client, _, protocol, _ = _tuple(orig)
        server, _, _, port = _tuple(reply)  # the reply comes from the real server, after DNAT
        yield Flow(family, client, server, protocol, port, orig, top.get(CTA_ZONE))


def _tuple(data: bytes) -> tuple[Any, Any, int, int]:
    """(source, destination, protocol, source port) of a tuple."""
    parts = attrs(data)
    ip = attrs(parts[CTA_TUPLE_IP])
    src, dst = (ip[1], ip[2]) if 1 in ip else (ip[3], ip[4])
    proto = attrs(parts[CTA_TUPLE_PROTO])
    sport = proto.get(CTA_PROTO_SRC_PORT)
    return (
        ipaddress.ip_address(src),
        ipaddress.ip_address(dst),
        proto[CTA_PROTO_NUM][0],
        struct.unpack("!H", sport[:2])[0] if sport else 0,
    )


def delete(sock: Rtnl, doomed: list[Flow]) -> None:
    """Deletes entries, many messages per datagram; an entry already gone is not an error."""
    batch: list[bytes] = []
    for seq, flow in enumerate(doomed, start=1):
        body = _NFGEN.pack(flow.family, 0, 0) + _nested(CTA_TUPLE_ORIG, flow.orig)
        if flow.zone is not None:
            body += attr(CTA_ZONE, flow.zone)
        batch.append(_HDR.pack(_HDR.size + len(body), _CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body)
        if sum(map(len, batch)) >= BATCH_BYTES or seq == len(doomed):
            _send_batch(sock, batch)
            batch = []


def _nested(kind: int, payload: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, payload)


def _send_batch(sock: Rtnl, batch: list[bytes]) -> None:
    sock.sock.send(b"".join(batch))
    pending = len(batch)
    while pending:
        data = sock.sock.recv(1 << 16)
        offset = 0
        while offset + _HDR.size <= len(data):
            size, kind, _, _, _ = _HDR.unpack_from(data, offset)
            if kind == NLMSG_ERROR:
                pending -= 1
                code = -struct.unpack_from("=i", data, offset + _HDR.size)[0]
                if code and code != errno.ENOENT:
                    what = errno.errorcode.get(code, str(code))
                    raise ApplyFailed(f"deleting the conntrack entry of a connection policy cut: {what}")
            offset += (size + 3) & ~3
