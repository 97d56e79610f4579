"""The rtnetlink messages the overlay needs beyond reconciler.rtnl: VXLAN link data, bridge FDB
entries and neighbours, over the same raw socket (one request costs tens of microseconds)."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from ...rtnl import NLM_F_CREATE, NLM_F_REPLACE, LinkMsg, Rtnl, attr, attrs

RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
NDA_DST, NDA_LLADDR = 1, 2
NUD_NOARP, NUD_PERMANENT = 0x40, 0x80
NTF_SELF = 0x02
AF_BRIDGE = 7
IFLA_VXLAN_ID, IFLA_VXLAN_LOCAL, IFLA_VXLAN_LEARNING = 1, 4, 7
IFLA_VXLAN_PROXY, IFLA_VXLAN_PORT, IFLA_VXLAN_LOCAL6 = 11, 15, 17
_NDMSG = struct.Struct("=BBHiHBB")


@dataclass(frozen=True)
class VxlanData:
    vni: int
    local: str
    port: int
    learning: bool
    proxy: bool


@dataclass(frozen=True)
class NeighMsg:
    ifindex: int
    state: int
    flags: int
    dst: str | None
    lladdr: str | None


def vxlan_data(link: LinkMsg) -> VxlanData:
    data = attrs(link.info_data)
    return VxlanData(
        vni=struct.unpack("=I", data[IFLA_VXLAN_ID][:4])[0] if IFLA_VXLAN_ID in data else 0,
        local=_address(data.get(IFLA_VXLAN_LOCAL) or data.get(IFLA_VXLAN_LOCAL6)) or "",
        port=struct.unpack("!H", data[IFLA_VXLAN_PORT][:2])[0] if IFLA_VXLAN_PORT in data else 0,
        learning=bool(data.get(IFLA_VXLAN_LEARNING, b"\0")[0]),
        proxy=bool(data.get(IFLA_VXLAN_PROXY, b"\0")[0]),
    )


def vxlan_info(vni: int, local: str, port: int, learning: bool, proxy: bool) -> bytes:
    """IFLA_INFO_DATA for a new VXLAN device; an IPv6 `local` makes it tunnel over IPv6."""
    out = attr(IFLA_VXLAN_ID, vni) + attr(IFLA_VXLAN_PORT, struct.pack("!H", port))
    out += attr(IFLA_VXLAN_LEARNING, bytes([learning])) + attr(IFLA_VXLAN_PROXY, bytes([proxy]))
    if not local:
        return out
    kind = IFLA_VXLAN_LOCAL6 if ":" in local else IFLA_VXLAN_LOCAL
    return out + attr(kind, socket.inet_pton(_family(local), local))


def neighbours(sock: Rtnl, family: int) -> list[NeighMsg]:
    """Neighbour entries (AF_INET, AF_INET6) or FDB entries (AF_BRIDGE) of every interface."""
    out = []
    for payload in sock.dump(RTM_GETNEIGH, _NDMSG.pack(family, 0, 0, 0, 0, 0, 0)):
        _, _, _, ifindex, state, flags, _ = _NDMSG.unpack_from(payload)
        a = attrs(payload, _NDMSG.size)
        dst, lladdr = a.get(NDA_DST), a.get(NDA_LLADDR)
        out.append(
            NeighMsg(
                ifindex,
                state,
                flags,
                _address(dst),
                lladdr.hex(":") if lladdr else None,
            )
        )
    return out


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _address(packed: bytes | None) -> str | None:
    if not packed or len(packed) not in (4, 16):
        return None
    return socket.inet_ntop(socket.AF_INET if len(packed) == 4 else socket.AF_INET6, packed)


def _mac(mac: str) -> bytes:
    return attr(NDA_LLADDR, bytes.fromhex(mac.replace(":", "")))


def _ip(address: str) -> bytes:
    return attr(NDA_DST, socket.inet_pton(_family(address), address))


def replace_fdb(sock: Rtnl, ifindex: int, mac: str, dst: str) -> None:
    # NTF_SELF: the VXLAN device's own table (MAC -> remote VTEP), not the bridge's.
    head = _NDMSG.pack(AF_BRIDGE, 0, 0, ifindex, NUD_PERMANENT | NUD_NOARP, NTF_SELF, 0)
    sock.request(RTM_NEWNEIGH, head + _mac(mac) + _ip(dst), NLM_F_CREATE | NLM_F_REPLACE)


def delete_fdb(sock: Rtnl, ifindex: int, mac: str, dst: str) -> None:
    head = _NDMSG.pack(AF_BRIDGE, 0, 0, ifindex, 0, NTF_SELF, 0)
    sock.request(RTM_DELNEIGH, head + _mac(mac) + _ip(dst))


def replace_neigh(sock: Rtnl, ifindex: int, ip: str, mac: str) -> None:
    head = _NDMSG.pack(_family(ip), 0, 0, ifindex, NUD_PERMANENT, 0, 0)
    sock.request(RTM_NEWNEIGH, head + _ip(ip) + _mac(mac), NLM_F_CREATE | NLM_F_REPLACE)


def delete_neigh(sock: Rtnl, ifindex: int, ip: str) -> None:
    sock.request(RTM_DELNEIGH, _NDMSG.pack(_family(ip), 0, 0, ifindex, 0, 0, 0) + _ip(ip))
