"""Service VIPs and the routing mesh in nftables: our `ip` table, static rules, elements for the rest.

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

from typing import Any

from ... import names
from ...firewall.decl import ChainDecl, SetDecl, TableDecl, element_json
from ...model import NftElement, NftTable, Resource
from ...spec import Spec
from . import wireguard

SLOTS = 12
FAMILY = "ip"
# A VIP answers only on its own network's bridge: other networks must not reach its backends.
_VIP_TYPE = ["ifname", "ipv4_addr", "inet_proto", "inet_service"]
_PORT_KEY = ["inet_proto", "inet_service"]


def _match(left: Any, right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


_DADDR = {"payload": {"protocol": "ip", "field": "daddr"}}
_L4PROTO = {"meta": {"key": "l4proto"}}
_DPORT = {"payload": {"protocol": "th", "field": "dport"}}
_VIP_KEY = {"concat": [{"meta": {"key": "iifname"}}, _DADDR, _L4PROTO, _DPORT]}
_MESH_KEY = {"concat": [_L4PROTO, _DPORT]}
_LOCAL = _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")
_DNATTED = _match({"ct": {"key": "status"}}, "dnat", "in")
_SNAT_NODE = {
    "snat": {"family": "ip", "addr": {"map": {"key": {"meta": {"key": "oifname"}}, "data": "@node_addr"}}}
}


def _slot(k: int) -> dict[str, Any]:
    return _match({"numgen": {"mode": "random", "mod": SLOTS - k, "offset": 0}}, 0)


def _vip_rules() -> tuple[tuple[Any, ...], ...]:
    return tuple(
        (
            _match(_VIP_KEY, "@vips"),
            _slot(k),
            {"dnat": {"family": "ip", "addr": {"map": {"key": _VIP_KEY, "data": f"@vip_{k}"}}}},
        )
        for k in range(SLOTS)
    )


def _mesh_rules() -> tuple[tuple[Any, ...], ...]:
    return tuple(
        (
            _LOCAL,
            _match(_MESH_KEY, "@mesh"),
            _slot(k),
            {
                "dnat": {
                    "family": "ip",
                    "addr": {"map": {"key": _MESH_KEY, "data": f"@mesh_{k}"}},
                    "port": {"map": {"key": _MESH_KEY, "data": "@mesh_port"}},
                }
            },
        )
        for k in range(SLOTS)
    )


SETS = (
    SetDecl("vips", _VIP_TYPE),
    SetDecl("vip_addrs", "ipv4_addr"),
    SetDecl("mesh", _PORT_KEY),
    SetDecl("mesh_port", _PORT_KEY, map="inet_service"),
    SetDecl("node_addr", "ifname", map="ipv4_addr"),
    *(SetDecl(f"vip_{k}", _VIP_TYPE, map="ipv4_addr") for k in range(SLOTS)),
    *(SetDecl(f"mesh_{k}", _PORT_KEY, map="ipv4_addr") for k in range(SLOTS)),
)
CHAINS = (
    ChainDecl("prerouting", "nat", "prerouting", -100, _vip_rules() + _mesh_rules()),
    # A VIP is an address of the host's bridge only so that the host answers ARP for it: what reaches
    # the host still addressed to a VIP is not a service port (those were translated) and is dropped.
    ChainDecl("input", "filter", "input", 0, ((_match(_DADDR, "@vip_addrs"), {"drop": None}),)),
    # The host itself reaches services through the routing mesh, as other machines do.
    ChainDecl("output", "nat", "output", -100, _mesh_rules()),
    # Before the inet table's masquerade (100): the first NAT binding of a connection wins.
    ChainDecl(
        "postrouting",
        "nat",
        "postrouting",
        99,
        ((_DNATTED, _SNAT_NODE),),
    ),
)


def table(scope: str) -> TableDecl:
    """The services' sets and chains, and the plaintext guard of encrypted overlays (`wireguard`)."""
    return TableDecl(FAMILY, names.nft_table(scope), SETS + wireguard.SETS, CHAINS + wireguard.chains(scope))


def desired_services(
    spec: Spec, scope: str, vips: dict[str, str], targets: dict[str, list[str]], node_addr: dict[str, str]
) -> list[Resource]:
    """`vips`: service -> VIP; `targets`: service -> its backends' addresses;
    `node_addr`: overlay bridge -> this host's node address on it."""
    if not spec.services:
        return []
    decl = table(scope)
    bridges = {svc.network: names.bridge_ifname(scope, svc.network) for svc in spec.services.values()}
    out: list[Resource] = [NftTable(FAMILY, decl.name, decl.fingerprint())]

    def element(set_name: str, value: Any) -> None:
        out.append(NftElement(FAMILY, decl.name, set_name, element_json(value)))

    for bridge, addr in node_addr.items():
        element("node_addr", [bridge, addr])
    for sname, svc in spec.services.items():
        element("vip_addrs", vips[sname])
        backends = targets[sname]
        for sp in svc.service_ports():
            vip_key = {"concat": [bridges[svc.network], vips[sname], sp.protocol, sp.port]}
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
