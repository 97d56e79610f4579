"""Encrypted overlays: their VXLAN traffic goes between the hosts' tunnel addresses, through one
WireGuard device per host (as Flannel's wireguard backend does), so the static FDB design stays.

Each host's tunnel address is derived from its underlay address (its low bits in TUNNEL_RANGE):
every host computes the same addresses from the spec, and adding a host moves no other. The device
holds this host's tunnel address with TUNNEL_RANGE's prefix, so the route to every tunnel address
leads into the device, and WireGuard sends each peer only what is addressed to its tunnel address.

Never plaintext: encrypted overlays use their own VXLAN port (TUNNEL_VXLAN_PORT), and our `ip`
table drops that port on any other interface than the device, in both directions. When the device
is gone (wireguard-go died) its route goes too and the VXLAN source address is no longer local, so
the kernel cannot send the packets anywhere; the rule covers what routing would not. A peer whose
key is wrong never completes a handshake: WireGuard drops its traffic.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ... import names
from ...errors import HostConflict, Problem
from ...firewall.decl import ChainDecl, SetDecl, element_json
from ...model import NftElement, Resource
from .wgkeys import public_key_of
from .wgmodel import WgPeer, Wireguard

if TYPE_CHECKING:
    from ...spec import Spec

TUNNEL_RANGE = ipaddress.IPv4Network("100.64.0.0/10")  # shared address space (RFC 6598)
TUNNEL_VXLAN_PORT = 14789  # the VXLAN port of encrypted overlays, used inside the tunnel only
# By the underlay's family: outer IPv4 20 (IPv6 40) + UDP 8 + WireGuard's header 16 and its tag 16.
OVERHEAD = {4: 60, 6: 80}
SET = "tunnel_vxlan"  # holds TUNNEL_VXLAN_PORT while the scope has an encrypted overlay here


@dataclass(frozen=True)
class Tunnel:
    """This host's side: where its private key is, and its public key."""

    key_file: str
    public_key: str


def encrypted_networks(spec: Spec) -> list[str]:
    return [n for n, net in spec.networks.items() if net.driver == "overlay" and net.encrypted]


def tunnel_address(underlay: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    return TUNNEL_RANGE.network_address + (int(underlay) & int(TUNNEL_RANGE.hostmask))


def vtep(spec: Spec, host: str, network: str) -> str:
    """Where a host's end of a network's VXLAN tunnel is: its tunnel address on an encrypted network."""
    address = spec.hosts[host].address
    return str(tunnel_address(address) if spec.networks[network].encrypted else address)


def overhead(spec: Spec, host: str) -> int:
    """What WireGuard adds to each packet on this host's underlay."""
    return OVERHEAD[spec.hosts[host].address.version]


def _endpoint(address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def vxlan_port(spec: Spec, network: str) -> int:
    return TUNNEL_VXLAN_PORT if spec.networks[network].encrypted else names.VXLAN_PORT


def problems(spec: Spec) -> list[Problem]:
    """An encrypted network needs every host's public key, each different, distinct tunnel addresses
    and a WireGuard port apart from the VXLAN ones."""
    encrypted = encrypted_networks(spec)
    if not encrypted:
        return []
    out = _key_problems(spec, encrypted[0]) + _address_problems(spec)
    if spec.wireguard_port in (names.VXLAN_PORT, TUNNEL_VXLAN_PORT):
        out.append(Problem(("wireguard_port",), f"UDP {spec.wireguard_port} is a VXLAN port of ours"))
    return out


def _key_problems(spec: Spec, network: str) -> list[Problem]:
    out: list[Problem] = []
    keys: dict[str, str] = {}
    for name, host in spec.hosts.items():
        at = ("hosts", name, "public_key")
        if host.public_key is None:
            out.append(
                Problem(
                    at,
                    f"network {network} is encrypted: every host needs its WireGuard public key "
                    "(`reconciler keygen` on the host prints it)",
                )
            )
        elif host.public_key in keys:
            out.append(Problem(at, f"is already the public key of host {keys[host.public_key]}"))
        else:
            keys[host.public_key] = name
    return out


def _address_problems(spec: Spec) -> list[Problem]:
    out: list[Problem] = []
    tunnels: dict[ipaddress.IPv4Address, str] = {}
    edges = (TUNNEL_RANGE.network_address, TUNNEL_RANGE.broadcast_address)
    for name, host in spec.hosts.items():
        at = ("hosts", name, "address")
        tunnel = tunnel_address(host.address)
        if host.address in TUNNEL_RANGE:
            why = f"{host.address} is in {TUNNEL_RANGE}, the range of encrypted overlays' tunnel addresses"
            out.append(Problem(at, why))
        elif tunnel in tunnels or tunnel in edges:
            whose = f"is host {tunnels[tunnel]}'s too" if tunnel in tunnels else "is not a host address"
            out.append(
                Problem(
                    at,
                    f"its tunnel address {tunnel} {whose}: tunnel addresses are the low "
                    f"{32 - TUNNEL_RANGE.prefixlen} bits of the underlay address in {TUNNEL_RANGE}",
                )
            )
        tunnels[tunnel] = name
    return out


def prepare(spec: Spec, me: str, key_file: str) -> Tunnel | None:
    """This host's tunnel, after checking its key file against the spec; None without encryption
    (or without hosts: then nothing leaves the host)."""
    if not spec.hosts or not encrypted_networks(spec):
        return None
    public = public_key_of(key_file)
    declared = spec.hosts[me].public_key
    if public != declared:
        raise HostConflict(
            f"hosts.{me}.public_key is {declared}, but the key file {key_file} is that of {public}: "
            "put that key in the spec, or pass this host's --key-file; nothing was changed"
        )
    return Tunnel(key_file, public)


def device(spec: Spec, scope: str, me: str, tunnel: Tunnel, underlay_mtu: int) -> Wireguard:
    port = spec.wireguard_port
    peers = sorted(
        WgPeer(h.public_key or "", _endpoint(h.address, port), f"{tunnel_address(h.address)}/32")
        for name, h in spec.hosts.items()
        if name != me
    )
    return Wireguard(
        ifname=names.wireguard_ifname(scope),
        port=port,
        public_key=tunnel.public_key,
        address=f"{tunnel_address(spec.hosts[me].address)}/{TUNNEL_RANGE.prefixlen}",
        peers=tuple(peers),
        mtu=underlay_mtu - overhead(spec, me),
        key_file=tunnel.key_file,
    )


def guard(family: str, table: str) -> Resource:
    """The element that turns the plaintext guard (`chains`) on."""
    return NftElement(family, table, SET, element_json(TUNNEL_VXLAN_PORT))


def _match(left: Any, right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _guard_rule(direction: str, ifname: str) -> tuple[Any, ...]:
    return (
        _match({"payload": {"protocol": "udp", "field": "dport"}}, f"@{SET}"),
        _match({"meta": {"key": direction}}, ifname, "!="),
        {"drop": None},
    )


SETS = (SetDecl(SET, "inet_service"),)


def chains(scope: str) -> tuple[ChainDecl, ...]:
    """Encrypted overlays' VXLAN port only through the scope's WireGuard device, out and in."""
    ifname = names.wireguard_ifname(scope)
    return (
        ChainDecl("tunnel_out", "filter", "output", 0, (_guard_rule("oifname", ifname),)),
        ChainDecl("tunnel_in", "filter", "input", 0, (_guard_rule("iifname", ifname),)),
    )
