"""nftables: every nft action of a plan goes to the kernel as one atomic transaction."""

from __future__ import annotations

import json
from typing import Any

from .. import fault, names
from ..diff import Action
from ..firewall.decl import element_json, table_commands
from ..firewall.layout import tables
from ..model import NftElement, NftTable
from ..policy.conntrack import sweep
from ..policy.nft import POLICY_SET_NAMES
from .context import Context


def transaction(ctx: Context, actions: list[Action]) -> list[dict[str, Any] | str]:
    """The commands for `actions`, ordered so that no command depends on a later one: one per set
    for its elements."""
    decls = tables(ctx.scope)
    drop_tables: list[dict[str, Any] | str] = []
    make_tables: list[dict[str, Any] | str] = []
    drop_elements: dict[tuple[str, str, str], list[str]] = {}
    add_elements: dict[tuple[str, str, str], list[str]] = {}
    for action in actions:
        res = action.resource
        if isinstance(res, NftTable):
            ref = {"family": res.family, "name": res.name}
            if action.op in ("delete", "replace"):
                # "add" first: deleting a table that is already gone would fail the whole transaction.
                drop_tables += [{"add": {"table": ref}}, {"delete": {"table": ref}}]
            if action.op in ("create", "replace"):
                make_tables += table_commands(decls[res.family])
        elif isinstance(res, NftElement):
            where = (res.family, res.table, res.set)
            if action.op == "delete":
                is_map = any(s.name == res.set and s.map for s in decls[res.family].sets)
                key = element_json(res.value[0]) if is_map else res.value_json
                drop_elements.setdefault(where, []).append(key)
            else:
                add_elements.setdefault(where, []).append(res.value_json)
    drops = [_elements("delete", where, keys) for where, keys in drop_elements.items()]
    adds = [_elements("add", where, values) for where, values in add_elements.items()]
    return drop_tables + drops + make_tables + adds


def _elements(op: str, where: tuple[str, str, str], values: list[str]) -> str:
    """One command for these elements of one set, as JSON text: the elements are JSON already
    (`NftElement.value_json`), and decoding 2,000 of them to have them encoded again, one command
    each, cost more than libnftables' whole commit."""
    family, table, name = (json.dumps(part) for part in where)
    body = f'{{"family":{family},"table":{table},"name":{name},"elem":[{",".join(values)}]}}'
    return f'{{"{op}":{{"element":{body}}}}}'


def execute(ctx: Context, actions: list[Action]) -> None:
    commands = transaction(ctx, actions)
    if commands:
        ctx.nft.transaction(commands)
        fault.step()
    if any(isinstance(a.resource, NftElement) and a.resource.set in POLICY_SET_NAMES for a in actions):
        sweep(ctx.nft, names.nft_table(ctx.scope))
