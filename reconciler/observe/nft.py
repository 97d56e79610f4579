"""Our nftables tables -> skeleton fingerprints and set elements."""

from __future__ import annotations

from typing import Any

from ..firewall.decl import element_json, fingerprint
from ..firewall.layout import tables
from ..model import NftElement, NftTable, Resource
from ..nft import Nft


def observe_firewall(nft: Nft, scope: str) -> list[Resource]:
    out: list[Resource] = []
    for family, decl in tables(scope).items():
        objects = nft.list_table(family, decl.name)
        if objects is not None:
            out.extend(_table(family, decl.name, objects))
    return out


def _table(family: str, name: str, objects: list[dict[str, Any]]) -> list[Resource]:
    chains: dict[str, tuple[str, int, list[str]]] = {}
    sets: list[str] = []
    elements: list[Resource] = []
    for obj in objects:
        if "chain" in obj:
            c = obj["chain"]
            chains[c["name"]] = (c.get("hook", ""), c.get("prio", 0), [])
        elif "rule" in obj:
            r = obj["rule"]
            chains.setdefault(r["chain"], ("", 0, []))[2].append(r.get("comment", ""))
        elif "set" in obj or "map" in obj:
            s = obj.get("set") or obj["map"]
            sets.append(s["name"])
            elements.extend(NftElement(family, name, s["name"], element_json(e)) for e in s.get("elem", []))
    summary = [(chain, hook, prio, rules) for chain, (hook, prio, rules) in chains.items()]
    return [NftTable(family, name, fingerprint(summary, sets)), *elements]
