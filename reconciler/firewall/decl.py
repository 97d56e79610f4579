"""How our nftables are declared: tables of chains and rules and set declarations, fingerprinted by
the comments derived from each rule's text. The layout (`layout.py`) and the drivers' tables use these."""

from __future__ import annotations

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


# One encoder for every element: json.dumps builds a new one per call when given options, a tenth of
# the cost of encoding an element, paid for each of thousands of them on every observe.
_ELEMENT_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def element_json(value: Any) -> str:
    return _ELEMENT_ENCODER.encode(value)
