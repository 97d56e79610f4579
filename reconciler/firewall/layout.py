"""Our nftables layout: static chains and rules per scope, with sets and maps for everything dynamic.

Adding a container or a port changes set/map elements only; the skeleton (chains, rules, set
declarations) changes only when this file does. Every rule carries a comment derived from its own
text, so observe can fingerprint a table without parsing rules back.

inet table (per scope):
- localnet: before conntrack and NAT, drop what arrives on any interface but `lo` addressed to
  127.0.0.0/8. Our bridges need route_localnet (below), which also makes the kernel accept such
  packets from containers: without this drop, a container that routes 127.0.0.1 via its gateway
  reaches services the host bound to 127.0.0.1 (kube-proxy's CVE-2020-8558). Nothing legitimate
  arrives so: replies to the host's connections to a published port on 127.0.0.1 arrive addressed
  to the bridge's address and become 127.0.0.1 only when NAT reverses the masquerade, after this hook.
- prerouting/output: DNAT published ports (`ports_*`: on every host address; `hostports_*`: on one).
- postrouting: masquerade outbound traffic of non-internal networks, traffic to a published port from
  127.0.0.1 (routing it out of a bridge with a loopback source, and its replies addressed back to
  127.0.0.1, needs the bridge's route_localnet), and hairpin connections container -> host port -> container.
- forward: replies pass; published ports pass; traffic within one bridge passes unless icc is off
  (with br_netfilter loaded, bridged frames traverse this hook as bridge -> same bridge); internal
  networks go nowhere; nothing else enters a bridge of this scope, which isolates networks from each
  other (another scope's table guards its own bridges the same way).
bridge table (only when some network sets icc: false): frames between two ports of such a network drop.

ip6 table (only when some network has IPv6): what the inet table's rules do for IPv4 and cannot for
IPv6, whose addresses are another type: localnet6 drops ::1 from anything but `lo` (the kernel does
too; this keeps the rule explicit), DNAT of published ports to containers' IPv6 addresses, NAT66
masquerade of outbound traffic and hairpin connections. The inet table's forward chain matches
interfaces, not addresses: isolation between networks, internal and icc hold for IPv6 as they do for
IPv4. Neighbour discovery never meets a drop: it is link-local, to the gateway or between the ports
of one bridge, and never forwarded.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .. import names
from ..drivers.registry import DRIVERS, driver_of
from ..endpoints import text
from ..model import NftElement, NftTable, Resource
from ..policy.nft import POLICY_CHAINS, POLICY_SETS, addresses_of, desired_policy
from ..statedir import ScopeRecord
from .decl import ChainDecl, SetDecl, TableDecl, element_json

if TYPE_CHECKING:
    from ..endpoints import Endpoint
    from ..spec import Spec

BRIDGE_GLOB = "nr-*"


def _match(left: Any, right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str) -> dict[str, Any]:
    return {"meta": {"key": key}}


def _payload(protocol: str, field: str) -> dict[str, Any]:
    return {"payload": {"protocol": protocol, "field": field}}


_L4 = [_meta("l4proto"), _payload("th", "dport")]
_HOST_L4 = [_payload("ip", "daddr"), *_L4]


def _dnat(key: list[Any], maps: str, family: str = "ip") -> dict[str, Any]:
    # Address and port come from two maps with the same key: libnftables 1.0.6's JSON parser crashes
    # on a map whose data is a concatenation (address . port).
    lookup = {"concat": key}
    return {
        "dnat": {
            "family": family,
            "addr": {"map": {"key": lookup, "data": f"@{maps}_addr"}},
            "port": {"map": {"key": lookup, "data": f"@{maps}_port"}},
        }
    }


_DNAT_ANY = (_match({"fib": {"result": "type", "flags": ["daddr"]}}, "local"), _dnat(_L4, "ports"))
_DNAT_HOST = (_dnat(_HOST_L4, "hostports"),)
_SADDR_MASQ = _match(_payload("ip", "saddr"), "@masq_subnets")
_TO_OUR_BRIDGE = _match(_meta("oifname"), "@bridges")
_MASQ = {"masquerade": None}
_CT_DNAT = _match({"ct": {"key": "status"}}, "dnat", "in")

INET_SETS = (
    SetDecl("bridges", "ifname"),
    SetDecl("internal", "ifname"),
    SetDecl("intra", ["ifname", "ifname"]),
    SetDecl("masq_subnets", "ipv4_addr", flags=("interval",)),
    SetDecl("ports_addr", ["inet_proto", "inet_service"], map="ipv4_addr"),
    SetDecl("ports_port", ["inet_proto", "inet_service"], map="inet_service"),
    SetDecl("hostports_addr", ["ipv4_addr", "inet_proto", "inet_service"], map="ipv4_addr"),
    SetDecl("hostports_port", ["ipv4_addr", "inet_proto", "inet_service"], map="inet_service"),
    *POLICY_SETS,
)
_LOOPBACK = {"prefix": {"addr": "127.0.0.0", "len": 8}}
# Raw priority: before conntrack (no entry for a dropped probe) and before our DNAT.
_LOCALNET_DROP = (
    _match(_meta("iifname"), "lo", "!="),
    _match(_payload("ip", "daddr"), _LOOPBACK),
    {"drop": None},
)
INET_CHAINS = (
    ChainDecl("localnet", "filter", "prerouting", -300, (_LOCALNET_DROP,)),
    ChainDecl("prerouting", "nat", "prerouting", -100, (_DNAT_ANY, _DNAT_HOST)),
    ChainDecl("output", "nat", "output", -100, (_DNAT_ANY, _DNAT_HOST)),
    ChainDecl(
        "postrouting",
        "nat",
        "postrouting",
        100,
        (
            (_SADDR_MASQ, _match(_meta("oifname"), BRIDGE_GLOB, "!="), _MASQ),
            (
                _match(_payload("ip", "saddr"), _LOOPBACK),
                _TO_OUR_BRIDGE,
                _MASQ,
            ),
            (_CT_DNAT, _SADDR_MASQ, _TO_OUR_BRIDGE, _MASQ),
        ),
    ),
    ChainDecl(
        "forward",
        "filter",
        "forward",
        0,
        (
            (_match({"ct": {"key": "state"}}, ["established", "related"], "in"), {"accept": None}),
            (_CT_DNAT, {"accept": None}),
            (_match({"concat": [_meta("iifname"), _meta("oifname")]}, "@intra"), {"accept": None}),
            (_match(_meta("iifname"), "@internal"), {"drop": None}),
            (_match(_meta("oifname"), "@internal"), {"drop": None}),
            # Our own bridges only: with br_netfilter, another scope's bridged traffic passes this
            # hook too (bridge -> same bridge), and its intra set is not ours to see.
            (_TO_OUR_BRIDGE, {"drop": None}),
        ),
    ),
    *POLICY_CHAINS,
)
_HOST_L4_6 = [_payload("ip6", "daddr"), *_L4]
_DNAT6_ANY = (_match({"fib": {"result": "type", "flags": ["daddr"]}}, "local"), _dnat(_L4, "ports", "ip6"))
_DNAT6_HOST = (_dnat(_HOST_L4_6, "hostports", "ip6"),)
_SADDR_MASQ6 = _match(_payload("ip6", "saddr"), "@masq_subnets")
_NOT_LOOPBACK6 = _match(_payload("ip6", "daddr"), "::1", "!=")
IP6_SETS = (
    SetDecl("bridges", "ifname"),
    SetDecl("masq_subnets", "ipv6_addr", flags=("interval",)),
    SetDecl("ports_addr", ["inet_proto", "inet_service"], map="ipv6_addr"),
    SetDecl("ports_port", ["inet_proto", "inet_service"], map="inet_service"),
    SetDecl("hostports_addr", ["ipv6_addr", "inet_proto", "inet_service"], map="ipv6_addr"),
    SetDecl("hostports_port", ["ipv6_addr", "inet_proto", "inet_service"], map="inet_service"),
)
_LOCALNET6_DROP = (
    _match(_meta("iifname"), "lo", "!="),
    _match(_payload("ip6", "daddr"), "::1"),
    {"drop": None},
)
IP6_CHAINS = (
    ChainDecl("localnet", "filter", "prerouting", -300, (_LOCALNET6_DROP,)),
    ChainDecl("prerouting", "nat", "prerouting", -100, (_DNAT6_ANY, _DNAT6_HOST)),
    # Not from ::1: IPv6 has no route_localnet, a loopback source never leaves the host, and the
    # connection would hang instead of being refused.
    ChainDecl(
        "output", "nat", "output", -100, ((_NOT_LOOPBACK6, *_DNAT6_ANY), (_NOT_LOOPBACK6, *_DNAT6_HOST))
    ),
    ChainDecl(
        "postrouting",
        "nat",
        "postrouting",
        100,
        (
            (_SADDR_MASQ6, _match(_meta("oifname"), BRIDGE_GLOB, "!="), _MASQ),
            (_CT_DNAT, _SADDR_MASQ6, _TO_OUR_BRIDGE, _MASQ),
        ),
    ),
)
BRIDGE_SETS = (SetDecl("noicc_ports", "ifname"),)
BRIDGE_CHAINS = (
    ChainDecl(
        "forward", "filter", "forward", 0, ((_match(_meta("iifname"), "@noicc_ports"), {"drop": None}),)
    ),
)


@functools.lru_cache(maxsize=64)
def tables(scope: str) -> Mapping[str, TableDecl]:
    """Our tables for a scope, by family: this layout's and the drivers' (the overlay's services).
    Built once per scope: each plan and apply asks for them, and building them with the
    fingerprints cost a few ms, a sixth of an in-process add."""
    name = names.nft_table(scope)
    out = {
        "inet": TableDecl("inet", name, INET_SETS, INET_CHAINS),
        "bridge": TableDecl("bridge", name, BRIDGE_SETS, BRIDGE_CHAINS),
        "ip6": TableDecl("ip6", name, IP6_SETS, IP6_CHAINS),
    }
    for driver in DRIVERS.values():
        for family, decl in driver.tables(scope).items():
            # One table per family and scope: a driver's sets and chains join ours of its family.
            mine = out.get(family)
            out[family] = (
                decl
                if mine is None
                else replace(mine, sets=mine.sets + decl.sets, chains=mine.chains + decl.chains)
            )
    return MappingProxyType(out)


@functools.lru_cache(maxsize=64)
def _fingerprint(scope: str, family: str) -> str:
    return tables(scope)[family].fingerprint()


def desired_firewall(
    spec: Spec, record: ScopeRecord, scope: str, eps: dict[str, list[Endpoint]]
) -> list[Resource]:
    # Networks of drivers that bypass the host's IP stack (macvlan): nothing to NAT, publish or isolate.
    bridged = {n: net for n, net in spec.networks.items() if driver_of(net).routed}
    if not bridged:
        return []
    decls = tables(scope)
    inet = decls["inet"]
    out: list[Resource] = [NftTable("inet", inet.name, _fingerprint(scope, "inet"))]

    def element(family: str, set_name: str, value: Any) -> None:
        out.append(NftElement(family, inet.name, set_name, element_json(value)))

    ip6 = any(net.has_ipv6 for net in bridged.values())
    if ip6:
        out.append(NftTable("ip6", inet.name, _fingerprint(scope, "ip6")))
    for n, net in bridged.items():
        bridge = names.bridge_ifname(scope, n)
        element("inet", "bridges", bridge)
        if ip6:
            element("ip6", "bridges", bridge)
        if net.icc:
            element("inet", "intra", {"concat": [bridge, bridge]})
        if net.internal:
            element("inet", "internal", bridge)
            continue
        for subnet in record.networks[n].prefixes():
            family = "inet" if subnet.version == 4 else "ip6"
            prefix = {"prefix": {"addr": str(subnet.network_address), "len": subnet.prefixlen}}
            element(family, "masq_subnets", prefix)
    for c, ctr in spec.containers.items():
        target = next(
            (ep for ep in eps[c] if ep.network in bridged and not bridged[ep.network].internal), None
        )
        for pm in ctr.port_mappings() if target else []:
            assert target is not None
            # Every host address of both families when none is given; a family the container has no
            # address of is not published.
            for family, address in (("inet", target.address), ("ip6", target.address6)):
                if address is None or (pm.host_ip is not None and pm.host_ip.version != address.version):
                    continue
                if pm.host_ip is None:
                    key, maps = {"concat": [pm.protocol, pm.host_port]}, "ports"
                else:
                    key, maps = {"concat": [str(pm.host_ip), pm.protocol, pm.host_port]}, "hostports"
                element(family, f"{maps}_addr", [key, text(address)])
                element(family, f"{maps}_port", [key, pm.container_port])
    noicc = [
        names.host_veth_ifname(scope, ep.container, ep.network)
        for their in eps.values()
        for ep in their
        if not spec.networks[ep.network].icc
    ]
    out += desired_policy(spec, inet.name, addresses_of(eps))
    if any(not net.icc for net in bridged.values()):
        bridge_table = decls["bridge"]
        out.append(NftTable("bridge", bridge_table.name, _fingerprint(scope, "bridge")))
        for port in noicc:
            element("bridge", "noicc_ports", port)
    return out
