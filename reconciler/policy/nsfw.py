"""Policy inside a container's own namespace, for containers on networks the host does not route.

A macvlan child gets frames from the parent's LAN and from its sibling children straight from the
macvlan driver: they never cross the host's forward hook, and a netdev hook on the parent would miss
the siblings and has no conntrack to tell replies from new connections. The one place that sees all
of it, with conntrack, is the container's own input hook. So such a container holds a copy of the
host's policy chain (hooked on input, loopback passes) and the elements for its own addresses, in a
table of our scope inside its namespace: one `ns-policy` resource per container, one nft transaction
per namespace (a namespace's netfilter is its own), elements diffed so rules stay as they are.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import names, netns
from ..endpoints import endpoints
from ..firewall.decl import ChainDecl, TableDecl, element_json, summary, table_commands
from ..model import Follows, Iface, Resource, State
from ..nft import Nft
from ..statedir import ScopeRecord
from .conntrack import sweep
from .model import rules
from .nft import ESTABLISHED, FAMILY, POLICY_SETS, addresses_of, destination_elements, rules_of

if TYPE_CHECKING:
    from ..apply.context import Context
    from ..diff import Action
    from ..spec import Spec

_LOOPBACK = ({"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "lo"}}, {"accept": None})
CHAIN = ChainDecl("policy", "filter", "input", -10, (ESTABLISHED, _LOOPBACK, *rules_of(4), *rules_of(6)))
KIND = "ns-policy"


def table(scope: str) -> TableDecl:
    return TableDecl(FAMILY, names.nft_table(scope), POLICY_SETS, (CHAIN,))


@dataclass(frozen=True)
class NsPolicy(Resource):
    """Our policy table in a container's namespace: its skeleton's fingerprint and its elements."""

    kind = KIND
    namespaced = True
    immutable = ("fingerprint",)
    follows = (Follows("netns", ("container",), "replace", "netns"),)
    container: str
    netns: str
    fingerprint: str
    elements: tuple[tuple[str, str], ...]  # (set, element JSON), sorted

    def __post_init__(self) -> None:
        # Read back from YAML or JSON (golden files), pairs come as lists.
        object.__setattr__(self, "elements", tuple(tuple(e) for e in self.elements))

    @property
    def id(self) -> str:
        return self.container


def desired_ns_policies(
    spec: Spec, record: ScopeRecord, scope: str, unrouted: Collection[str]
) -> list[Resource]:
    """For each selected container on one of the `unrouted` networks (the host does not route them)."""
    selected = rules(spec)
    bypassing = [
        c
        for c in selected
        if c in spec.containers and any(n in unrouted for n in spec.containers[c].attachments())
    ]
    if not bypassing:
        return []
    addresses = addresses_of(endpoints(spec, record))
    fingerprint = table(scope).fingerprint()
    out: list[Resource] = []
    for c in bypassing:
        found = {
            (name, element_json(value))
            for addr in addresses.get(c, [])
            for name, value in destination_elements(selected[c], addr, addresses)
        }
        path = spec.containers[c].netns or names.netns_path(c)
        out.append(NsPolicy(c, path, fingerprint, tuple(sorted(found))))
    return out


def observe_ns_policies(state: State, scope: str) -> list[Resource]:
    """Our table in the namespace of every container with a child of a host link (the interfaces the
    host does not route)."""
    ifaces = [r for r in state.of_kind("iface") if isinstance(r, Iface) and r.parent]
    name = names.nft_table(scope)
    out: list[Resource] = []
    for container, path in sorted({(r.container, r.netns) for r in ifaces}):
        objects = netns.run_in(path, lambda: Nft().list_table(FAMILY, name))
        if objects is not None:
            fingerprint, elements = summary(objects)
            out.append(NsPolicy(container, path, fingerprint, tuple(sorted(elements))))
    return out


def execute(ctx: Context, action: Action) -> None:
    res = action.resource
    assert isinstance(res, NsPolicy)
    decl = table(ctx.scope)
    ref = {"family": FAMILY, "name": decl.name}
    if action.op == "delete":
        commands: list[dict[str, Any]] = [{"add": {"table": ref}}, {"delete": {"table": ref}}]
    elif action.op == "change" and isinstance(action.before, NsPolicy):
        old, new = set(action.before.elements), set(res.elements)
        commands = [_element("delete", decl.name, s, v) for s, v in sorted(old - new)]
        commands += [_element("add", decl.name, s, v) for s, v in sorted(new - old)]
    else:
        commands = [{"add": {"table": ref}}, {"delete": {"table": ref}}, *table_commands(decl)]
        commands += [_element("add", decl.name, s, v) for s, v in res.elements]

    def run() -> None:
        nft = Nft()
        nft.transaction(commands)
        if action.op != "delete":
            sweep(nft, decl.name)

    netns.run_in(res.netns, run)


def _element(op: str, table_name: str, set_name: str, value: str) -> dict[str, Any]:
    ref = {"family": FAMILY, "table": table_name, "name": set_name}
    return {op: {"element": {**ref, "elem": [json.loads(value)]}}}
