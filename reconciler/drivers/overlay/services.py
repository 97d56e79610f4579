"""Service VIPs and the routing mesh in nftables: our `ip` table, static rules, elements for the rest;
the same for IPv6 VIPs, as sets and chains of the layout's `ip6` table.

A connection to VIP:PORT (or to PUBLISHED on any local address) is sent to one of SLOTS slots by
`numgen random`, and each slot's map gives the backend for it: slot k holds backend k mod N, so the
backends share the slots evenly (exactly when N divides SLOTS). Adding, removing or moving a backend
rewrites map elements only. The rule for slot k matches with probability 1/(SLOTS-k), which makes
every slot equally likely. (libnftables 1.0.6's JSON cannot declare a map keyed by a numgen
concatenation, which would need one rule only.)

Every translated connection that leaves through an overlay bridge gets the host's node address on
that overlay as its source (`node_addr`), so replies from a backend on any host come back through the
host that translated them. (Published ports of containers on an overlay are translated too, so they
see the node address, not the client's. libnftables cannot put `ct original proto-dst` in a
concatenation to tell the two apart.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ... import names
from ...firewall.decl import ChainDecl, SetDecl, TableDecl, element_json
from ...model import NftElement, NftTable, Resource
from . import wireguard

if TYPE_CHECKING:
    from ...spec import Spec

SLOTS = 12
FAMILY = "ip"
# The IPv6 VIPs' sets and chains join the firewall layout's ip6 table (one table per family and
# scope), their chains named apart from its own.
CHAIN_PREFIX = {"ip": "", "ip6": "svc_"}
_ADDR_TYPE = {"ip": "ipv4_addr", "ip6": "ipv6_addr"}
_PORT_KEY = ["inet_proto", "inet_service"]


def _match(left: Any, right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


_L4PROTO = {"meta": {"key": "l4proto"}}
_DPORT = {"payload": {"protocol": "th", "field": "dport"}}
_MESH_KEY = {"concat": [_L4PROTO, _DPORT]}
_LOCAL = _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")
_DNATTED = _match({"ct": {"key": "status"}}, "dnat", "in")


def _daddr(family: str) -> dict[str, Any]:
    return {"payload": {"protocol": family, "field": "daddr"}}


def _vip_key(family: str) -> dict[str, Any]:
    # A VIP answers only on its own network's bridge: other networks must not reach its backends.
    return {"concat": [{"meta": {"key": "iifname"}}, _daddr(family), _L4PROTO, _DPORT]}


def _slot(k: int) -> dict[str, Any]:
    return _match({"numgen": {"mode": "random", "mod": SLOTS - k, "offset": 0}}, 0)


def _vip_rules(family: str) -> tuple[tuple[Any, ...], ...]:
    key = _vip_key(family)
    return tuple(
        (
            _match(key, "@vips"),
            _slot(k),
            {"dnat": {"family": family, "addr": {"map": {"key": key, "data": f"@vip_{k}"}}}},
        )
        for k in range(SLOTS)
    )


def _mesh_rules(family: str) -> tuple[tuple[Any, ...], ...]:
    return tuple(
        (
            _LOCAL,
            _match(_MESH_KEY, "@mesh"),
            _slot(k),
            {
                "dnat": {
                    "family": family,
                    "addr": {"map": {"key": _MESH_KEY, "data": f"@mesh_{k}"}},
                    "port": {"map": {"key": _MESH_KEY, "data": "@mesh_port"}},
                }
            },
        )
        for k in range(SLOTS)
    )


def _input_drop(family: str) -> tuple[Any, ...]:
    if family == "ip":
        return (_match(_daddr(family), "@vip_addrs"), {"drop": None})
    # Neighbour discovery probes an address it has cached with unicast solicitations: let them through.
    return (_match(_daddr(family), "@vip_addrs"), _match(_L4PROTO, "ipv6-icmp", "!="), {"drop": None})


def sets(family: str) -> tuple[SetDecl, ...]:
    addr = _ADDR_TYPE[family]
    vip_type = ["ifname", addr, "inet_proto", "inet_service"]
    return (
        SetDecl("vips", vip_type),
        SetDecl("vip_addrs", addr),
        SetDecl("mesh", _PORT_KEY),
        SetDecl("mesh_port", _PORT_KEY, map="inet_service"),
        SetDecl("node_addr", "ifname", map=addr),
        *(SetDecl(f"vip_{k}", vip_type, map=addr) for k in range(SLOTS)),
        *(SetDecl(f"mesh_{k}", _PORT_KEY, map=addr) for k in range(SLOTS)),
    )


def chains(family: str) -> tuple[ChainDecl, ...]:
    prefix = CHAIN_PREFIX[family]
    snat_node = {
        "snat": {
            "family": family,
            "addr": {"map": {"key": {"meta": {"key": "oifname"}}, "data": "@node_addr"}},
        }
    }
    return (
        ChainDecl(f"{prefix}prerouting", "nat", "prerouting", -100, _vip_rules(family) + _mesh_rules(family)),
        # A VIP is an address of the host's bridge only so that the host answers ARP (and neighbour
        # solicitations) for it: what reaches the host still addressed to a VIP is not a service port
        # (those were translated) and is dropped.
        ChainDecl(f"{prefix}input", "filter", "input", 0, (_input_drop(family),)),
        # The host itself reaches services through the routing mesh, as other machines do.
        ChainDecl(f"{prefix}output", "nat", "output", -100, _mesh_rules(family)),
        # Before the masquerade (100): the first NAT binding of a connection wins.
        ChainDecl(f"{prefix}postrouting", "nat", "postrouting", 99, ((_DNATTED, snat_node),)),
    )


def table(scope: str, family: str = FAMILY) -> TableDecl:
    """The services' sets and chains of a family; the ip table also holds the plaintext guard of encrypted
    overlays (`wireguard`: their VXLAN runs between IPv4 tunnel addresses whatever the underlay)."""
    guard_sets, guard_chains = (wireguard.SETS, wireguard.chains(scope)) if family == "ip" else ((), ())
    return TableDecl(family, names.nft_table(scope), sets(family) + guard_sets, chains(family) + guard_chains)


def desired_services(
    spec: Spec,
    scope: str,
    vips: dict[str, str],
    targets: dict[str, list[str]],
    node_addr: dict[str, str],
    family: str = FAMILY,
) -> list[Resource]:
    """The elements of one family (`ip` or `ip6`). `vips`: service -> VIP of the family (a service
    of a network without it is absent); `targets`: service -> its backends' addresses;
    `node_addr`: overlay bridge -> this host's node address on it."""
    if not vips:
        return []
    name = names.nft_table(scope)
    bridges = {svc.network: names.bridge_ifname(scope, svc.network) for svc in spec.services.values()}
    # The ip6 table is the firewall layout's, created with its elements whenever a network has IPv6.
    out: list[Resource] = [NftTable(family, name, table(scope).fingerprint())] if family == FAMILY else []

    def element(set_name: str, value: Any) -> None:
        out.append(NftElement(family, name, set_name, element_json(value)))

    for bridge, addr in node_addr.items():
        element("node_addr", [bridge, addr])
    for sname, vip in vips.items():
        svc = spec.services[sname]
        element("vip_addrs", vip)
        backends = targets[sname]
        for sp in svc.service_ports():
            vip_key = {"concat": [bridges[svc.network], vip, sp.protocol, sp.port]}
            element("vips", vip_key)
            for k in range(SLOTS):
                element(f"vip_{k}", [vip_key, backends[k % len(backends)]])
            if sp.published is None:
                continue
            mesh_key = {"concat": [sp.protocol, sp.published]}
            element("mesh", mesh_key)
            element("mesh_port", [mesh_key, sp.port])
            for k in range(SLOTS):
                element(f"mesh_{k}", [mesh_key, backends[k % len(backends)]])
    return out
