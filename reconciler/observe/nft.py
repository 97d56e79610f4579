"""Our nftables tables -> skeleton fingerprints and set elements; other scopes' published ports."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable
from typing import Any

from .. import names
from ..firewall.decl import SetDecl, element_json, summary
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


def observe_elements(nft: Nft, scope: str, elements: Iterable[NftElement]) -> list[Resource] | None:
    """Of our tables' elements, only `elements`, each looked up by its key (an interval set's listed:
    a few subnets): what a part's apply changed, without listing the thousands it did not touch. An
    element the kernel lacks is left out (the verification then fails on it). None when a lookup
    cannot tell (an element nft prints otherwise than this renders it): the caller lists the tables."""
    decls = tables(scope)
    out: list[Resource] = []
    listed: dict[tuple[str, str, str], set[str]] = {}
    for element in elements:
        table = decls.get(element.family)
        kinds = next((s for s in table.sets if s.name == element.set), None) if table else None
        if kinds is None:
            return None
        if "interval" in kinds.flags:
            # nft's `get element` misses intervals next to others (10.101.0.0/16 beside
            # 10.102.0.0/16): an interval set (one subnet a network) is listed instead.
            where = (element.family, element.table, element.set)
            if where not in listed:
                found = nft.list_set(*where)
                listed[where] = {element_json(e) for e in found or []}
            if element.value_json in listed[where]:
                out.append(element)
            continue
        texts = _element_text(element.value, kinds)
        if texts is None:
            return None
        printed = nft.get_element(element.family, element.table, element.set, texts[0])
        if printed is None:
            continue
        if _printed_element(printed) != texts[1]:
            return None
        out.append(element)
    return out


def _element_text(value: Any, decl: SetDecl) -> tuple[str, str] | None:
    """An element's key in nft syntax and the whole element as nft prints it (numeric protocols)."""
    key, data = (value[0], value[1]) if decl.map else (value, None)
    key_text = _text(key, decl.type)
    if key_text is None:
        return None
    if data is None:
        return key_text, key_text
    data_text = _text(data, decl.map)
    return None if data_text is None else (key_text, f"{key_text} : {data_text}")


def _text(value: Any, kind: Any) -> str | None:
    """A hash set's key field in nft syntax (prefixes and ranges live in interval sets, listed)."""
    if isinstance(value, dict) and "concat" in value:
        parts = value["concat"]
        if not isinstance(kind, list) or len(parts) != len(kind):
            return None
        texts = [_text(part, one) for part, one in zip(parts, kind, strict=True)]
        return None if None in texts else " . ".join(t for t in texts if t is not None)
    if isinstance(value, bool) or not isinstance(value, str | int) or isinstance(kind, list):
        return None
    if kind == "ifname":
        return json.dumps(value)
    if kind == "inet_proto" and isinstance(value, str):
        try:
            return str(socket.getprotobyname(value))
        except OSError:
            return None
    return str(value)


def _printed_element(printed: str) -> str | None:
    """The one element in `nft get element`'s output: `elements = { ... }`."""
    start = printed.find("elements = { ")
    end = printed.find(" }", start)
    return None if start < 0 or end < 0 else printed[start + len("elements = { ") : end]
