"""Our nftables tables -> skeleton fingerprints and set elements; other scopes' published ports."""

from __future__ import annotations

from typing import Any

from .. import names
from ..firewall.decl import summary
from ..firewall.layout import tables
from ..model import NftElement, NftTable, Resource
from ..nft import Nft
from ..scopes import LivePort


def observe_firewall(nft: Nft, scope: str) -> list[Resource]:
    out: list[Resource] = []
    for family, decl in tables(scope).items():
        objects = nft.list_table(family, decl.name)
        if objects is not None:
            out.extend(_table(family, decl.name, objects))
    return out


def _table(family: str, name: str, objects: list[dict[str, Any]]) -> list[Resource]:
    fp, elements = summary(objects)
    return [NftTable(family, name, fp), *(NftElement(family, name, s, value) for s, value in elements)]


def other_ports(nft: Nft, scope: str) -> list[LivePort]:
    """The ports every other scope's tables publish (what answers on this host now)."""
    out: list[LivePort] = []
    for family, name in nft.list_tables():
        other = names.scope_of_table(name)
        if other is None or other == scope or family not in ("inet", "ip", "ip6"):
            continue
        for obj in nft.list_table(family, name) or []:
            body = obj.get("map") or obj.get("set")
            if body is not None and body["name"] in _PORT_SETS:
                out.extend(_ports(other, body["name"], body.get("elem", [])))
    return out


# Where published ports live: the DNAT maps of the inet and ip6 tables, the routing mesh of the ip table.
_PORT_SETS = {"ports_addr", "hostports_addr", "mesh"}


def _ports(scope: str, set_name: str, elements: list[Any]) -> list[LivePort]:
    out = []
    for element in elements:
        key, target = element if isinstance(element, list) else (element, "")
        fields = key["concat"]
        host_ip = str(fields[0]) if set_name == "hostports_addr" else None
        protocol, port = fields[-2], fields[-1]
        out.append(LivePort(scope, str(protocol), int(port), host_ip, str(target)))
    return out
