"""Policy in our inet table: a static chain and sets, so that what the policies say is elements only.

Per family (`ip`, `ip6`; the sets' names carry a 6 for IPv6):
- `pol_sel`: the addresses of selected containers (isolated in ingress);
- `pol_any`: destination . source range, for policies without ports (every port and protocol);
- `pol_ports`: destination . source range . protocol . port range;
- `pol_nodes`: the cluster's node addresses. A connection through a service VIP is translated (and
  checked, with its real client as source) on the client's host, which then gives it its node
  address as source: the destination host passes what comes from a node.

The chain hooks `forward` and sees every connection routed to a container (published ports after
DNAT, VIPs after DNAT, other networks) and, through br_netfilter, every frame bridged to one (the
same bridge, the VXLAN device of an overlay): replies and related packets (ICMP errors) first, then
a new connection to a selected address passes only if an element admits it. Adding a container to a
policy, or a policy, adds elements; no rule changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..firewall.decl import ChainDecl, SetDecl, element_json
from ..model import NftElement, Resource, State
from .intervals import Span, address_values, disjoint, merge, port_value
from .model import Rule, rules

if TYPE_CHECKING:
    from ..endpoints import Endpoint
    from ..spec import IP, Spec

FAMILY = "inet"
_TYPES = {4: "ipv4_addr", 6: "ipv6_addr"}
_PROTO = {4: "ip", 6: "ip6"}


def set_name(base: str, version: int) -> str:
    return base if version == 4 else f"{base}6"


def _sets(version: int) -> tuple[SetDecl, ...]:
    addr = _TYPES[version]
    return (
        SetDecl(set_name("pol_sel", version), addr),
        SetDecl(set_name("pol_nodes", version), addr),
        SetDecl(set_name("pol_any", version), [addr, addr], flags=("interval",)),
        SetDecl(
            set_name("pol_ports", version), [addr, addr, "inet_proto", "inet_service"], flags=("interval",)
        ),
    )


def _match(left: Any, right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def rules_of(version: int) -> tuple[tuple[Any, ...], ...]:
    proto = _PROTO[version]
    daddr = {"payload": {"protocol": proto, "field": "daddr"}}
    saddr = {"payload": {"protocol": proto, "field": "saddr"}}
    l4 = [{"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]
    selected = _match(daddr, "@" + set_name("pol_sel", version))
    return (
        (selected, _match(saddr, "@" + set_name("pol_nodes", version)), {"accept": None}),
        (_match({"concat": [daddr, saddr]}, "@" + set_name("pol_any", version)), {"accept": None}),
        (_match({"concat": [daddr, saddr, *l4]}, "@" + set_name("pol_ports", version)), {"accept": None}),
        (selected, {"counter": None}, {"drop": None}),
    )


POLICY_SETS = (*_sets(4), *_sets(6))
ESTABLISHED = (_match({"ct": {"key": "state"}}, ["established", "related"], "in"), {"accept": None})
POLICY_CHAINS = (ChainDecl("policy", "filter", "forward", -10, (ESTABLISHED, *rules_of(4), *rules_of(6))),)
POLICY_SET_NAMES = frozenset(s.name for s in POLICY_SETS)


def desired_policy(
    spec: Spec, table: str, addresses: Mapping[str, list[IP]], nodes: Sequence[IP] = ()
) -> list[Resource]:
    """The elements for `spec.policies`. `addresses`: every container's known addresses (a
    container with none is neither selected nor admitted here); `nodes`: the cluster's node addresses."""
    selected = rules(spec)
    if not selected:
        return []
    out: list[Resource] = []
    for node in nodes:
        out.append(NftElement(FAMILY, table, set_name("pol_nodes", node.version), element_json(str(node))))
    for dst, their in selected.items():
        for addr in addresses.get(dst, []):
            for name, value in destination_elements(their, addr, addresses):
                out.append(NftElement(FAMILY, table, name, element_json(value)))
    return out


def destination_elements(
    their: list[Rule], dst: IP, addresses: Mapping[str, list[IP]]
) -> list[tuple[str, Any]]:
    """(set, value) of everything that selects and admits connections to one address."""
    found = [("pol_sel", str(dst)), *_elements(their, dst, addresses)]
    return [(set_name(base, dst.version), value) for base, value in found]


def _elements(their: list[Rule], dst: IP, addresses: Mapping[str, list[IP]]) -> list[tuple[str, Any]]:
    any_spans: list[Span] = []
    rects: dict[str, list[tuple[Span, Span]]] = {}
    for rule in their:
        spans = _source_spans(rule, dst.version, addresses)
        if not rule.ports:
            any_spans += spans
            continue
        for port in rule.ports:
            rects.setdefault(port.protocol, []).extend((s, (port.first, port.last)) for s in spans)
    out: list[tuple[str, Any]] = []
    for span in merge(any_spans):
        out += [("pol_any", {"concat": [str(dst), v]}) for v in address_values(span, dst.version)]
    for protocol, its in sorted(rects.items()):
        for src, ports in disjoint(its):
            out += [
                ("pol_ports", {"concat": [str(dst), v, protocol, port_value(ports)]})
                for v in address_values(src, dst.version)
            ]
    return out


def _source_spans(rule: Rule, version: int, addresses: Mapping[str, list[IP]]) -> list[Span]:
    found = (a for c in sorted(rule.containers) for a in addresses.get(c, []))
    spans = [(int(a), int(a)) for a in found if a.version == version]
    for net in rule.cidrs:
        if net.version == version:
            spans.append((int(net.network_address), int(net.broadcast_address)))
    return spans


def addresses_of(eps: Mapping[str, list[Endpoint]]) -> dict[str, list[IP]]:
    """Per container, its IPv4 and IPv6 addresses on every network."""
    out: dict[str, list[IP]] = {}
    for c, its in eps.items():
        out[c] = [a for ep in its for a in (ep.address, ep.address6) if a is not None]
    return out


def replace_policy(state: State, elements: list[Resource]) -> None:
    """The policy elements of `state` replaced by `elements` (computed with the whole cluster's
    addresses: the local ones cut the allowed space into other pieces)."""
    stale = [
        key
        for key, res in state.resources.items()
        if isinstance(res, NftElement) and res.family == FAMILY and res.set in POLICY_SET_NAMES
    ]
    for key in stale:
        del state.resources[key]
    for res in elements:
        state.add(res)
