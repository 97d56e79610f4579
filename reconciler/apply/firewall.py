"""nftables: every nft action of a plan goes to the kernel as one atomic transaction."""

from __future__ import annotations

from typing import Any

from .. import fault, names
from ..diff import Action
from ..firewall.decl import table_commands
from ..firewall.layout import tables
from ..model import NftElement, NftTable
from ..policy.conntrack import sweep
from ..policy.nft import POLICY_SET_NAMES
from .context import Context


def transaction(ctx: Context, actions: list[Action]) -> list[dict[str, Any]]:
    """The commands for `actions`, ordered so that no command depends on a later one."""
    decls = tables(ctx.scope)
    drop_tables: list[dict[str, Any]] = []
    drop_elements: list[dict[str, Any]] = []
    make_tables: list[dict[str, Any]] = []
    add_elements: list[dict[str, Any]] = []
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
            ref = {"family": res.family, "table": res.table, "name": res.set}
            if action.op == "delete":
                value = res.value
                is_map = any(s.name == res.set and s.map for s in decls[res.family].sets)
                drop_elements.append(
                    {"delete": {"element": {**ref, "elem": [value[0] if is_map else value]}}}
                )
            else:
                add_elements.append({"add": {"element": {**ref, "elem": [res.value]}}})
    return drop_tables + drop_elements + make_tables + add_elements


def execute(ctx: Context, actions: list[Action]) -> None:
    commands = transaction(ctx, actions)
    if commands:
        ctx.nft.transaction(commands)
        fault.step()
    if any(isinstance(a.resource, NftElement) and a.resource.set in POLICY_SET_NAMES for a in actions):
        sweep(ctx.nft, names.nft_table(ctx.scope))
