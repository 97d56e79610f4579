"""How our nftables are declared: tables of chains and rules and set declarations, fingerprinted by
the comments derived from each rule's text. The layout (`layout.py`) and the drivers' tables use these."""

from __future__ import annotations

import _json
import hashlib
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SetDecl:
    name: str
    type: str | list[str]
    map: str | None = None
    flags: tuple[str, ...] = ()

    def json(self, family: str, table: str) -> dict[str, Any]:
        body: dict[str, Any] = {"family": family, "table": table, "name": self.name, "type": self.type}
        if self.flags:
            body["flags"] = list(self.flags)
        if self.map:
            body["map"] = self.map
            return {"map": body}
        return {"set": body}


@dataclass(frozen=True)
class ChainDecl:
    name: str
    type: str
    hook: str
    prio: int
    rules: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True)
class TableDecl:
    family: str
    name: str
    sets: tuple[SetDecl, ...]
    chains: tuple[ChainDecl, ...]

    def fingerprint(self) -> str:
        return fingerprint(
            [(c.name, c.hook, c.prio, [rule_comment(r) for r in c.rules]) for c in self.chains],
            [s.name for s in self.sets],
        )


def rule_comment(expr: tuple[Any, ...]) -> str:
    return "nr:" + hashlib.sha256(json.dumps(expr, sort_keys=True).encode()).hexdigest()[:12]


def fingerprint(chains: list[tuple[str, str, int, list[str]]], sets: list[str]) -> str:
    blob = json.dumps([sorted(chains), sorted(sets)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def table_commands(decl: TableDecl) -> list[dict[str, Any]]:
    """The commands that create a table as declared (sets, chains, rules), in libnftables JSON."""
    fam, name = decl.family, decl.name
    out: list[dict[str, Any]] = [{"add": {"table": {"family": fam, "name": name}}}]
    out += [{"add": s.json(fam, name)} for s in decl.sets]
    for chain in decl.chains:
        body = {"family": fam, "table": name, "name": chain.name, "type": chain.type}
        out.append({"add": {"chain": {**body, "hook": chain.hook, "prio": chain.prio, "policy": "accept"}}})
        for rule in chain.rules:
            ref = {"family": fam, "table": name, "chain": chain.name, "expr": list(rule)}
            out.append({"add": {"rule": {**ref, "comment": rule_comment(rule)}}})
    return out


def summary(objects: list[dict[str, Any]]) -> tuple[str, list[tuple[str, str]]]:
    """A listed table's skeleton fingerprint and its elements, as (set, element JSON)."""
    chains: dict[str, tuple[str, int, list[str]]] = {}
    sets: list[str] = []
    elements: list[tuple[str, str]] = []
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
            elements.extend((s["name"], element_json(e)) for e in s.get("elem", []))
    listed = [(chain, hook, prio, rules) for chain, (hook, prio, rules) in chains.items()]
    return fingerprint(listed, sets), elements


# One encoder for every element, the C one called directly: json.dumps builds a new one per call when
# given options, and JSONEncoder.encode builds its C encoder on every call; that was more than half
# the cost of encoding an element, paid for each of thousands of them on every observe.
_ELEMENT_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
_C_ENCODE = _json.make_encoder(
    None, _ELEMENT_ENCODER.default, _json.encode_basestring_ascii, None, ":", ",", True, False, True
)


def element_json(value: Any) -> str:
    return "".join(_C_ENCODE(value, 0))
