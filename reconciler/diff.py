"""The plan: a pure function of desired and observed state returning ordered actions.

Resources are paired by key. A missing one is created, an extra one deleted, a differing one changed
in place, or replaced when a field that cannot change in place differs. Replacing a container's
namespace or interface also replaces what the kernel removes with it, and a replaced bridge or nft
table takes its ports or elements along; `_cascade` adds those follow-ups, as each kind declares them
(`model.Follows`), so the plan names no driver's kinds.

Order: deletions first (dependents before what they depend on), then per kind, in dependency order,
replacements, changes and creations.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from .model import KIND_RANK, LINK, Follows, HostsFile, Iface, Key, Netns, NftElement, Resource, State

Op = Literal["create", "change", "replace", "delete"]
# Objects we may adjust but never remove: the sysctl is the host's, shared with everyone.
NEVER_DELETED = {"sysctl"}


@dataclass(frozen=True)
class Action:
    op: Op
    resource: Resource  # desired for create/change/replace; observed for delete
    before: Resource | None = None
    # What the executor must redo: the differing fields, and the one a cascade adds (a route's `dev`
    # when its interface goes), whose value may be equal on both sides.
    fields: tuple[str, ...] = ()
    cause: str = ""  # for a cascade: the change elsewhere that forces this one ("netns web is replaced")

    def changes(self) -> dict[str, tuple[Any, Any]]:
        """field -> (before, after) for the fields whose values really differ."""
        if self.before is None:
            return {}
        before, after = self.before.attrs(), self.resource.attrs()
        return {f: (before.get(f), after.get(f)) for f in self.fields if before.get(f) != after.get(f)}


def plan(desired: State, observed: State) -> list[Action]:
    want, have = desired.resources, observed.resources
    actions: dict[Key, Action] = {}
    for key, res in want.items():
        old = have.get(key)
        if old is None:
            actions[key] = Action("create", res)
            continue
        fields = tuple(res.differences(old))
        if not fields or _someone_elses(old):
            continue  # conflicts() refuses a spec that would take over someone else's namespace
        op: Op = "replace" if any(f in res.immutable for f in fields) else "change"
        actions[key] = Action(op, res, old, fields)
    for key, old in have.items():
        if key not in want and key[0] not in NEVER_DELETED and not _someone_elses(old):
            actions[key] = Action("delete", old)
    _cascade(want, have, actions)
    return ordered(actions.values())


def _someone_elses(res: Resource) -> bool:
    return isinstance(res, Netns) and res.adopted


def _cascade(want: dict[Key, Resource], have: dict[Key, Resource], actions: dict[Key, Action]) -> None:
    """Follow-ups of replaced and deleted objects, as each kind declares them (`Resource.follows`)."""
    replaced = {k for k, a in actions.items() if a.op in ("replace", "delete")}
    created = {k for k, a in actions.items() if a.op == "create"} | replaced
    # A lost interface (and the routes through it), by (container, ifname): why it is lost.
    lost_devs: dict[tuple[str, str], str] = {}
    for k, res in ({**have, **want} if replaced else {}).items():
        if not isinstance(res, Iface):
            continue
        if k in replaced:
            lost_devs[res.container, res.ifname] = _because(actions[k])
        elif rule := next((f for f in res.follows if f.op == "replace" and f.target(res) in replaced), None):
            lost_devs[res.container, res.ifname] = _because(actions[rule.target(res)])
    # A new address flushes the old one, and the kernel drops the routes through it with it.
    lost_routes = {
        (a.resource.container, a.resource.ifname): f"iface {a.resource.id} changes address"
        for a in actions.values()
        if isinstance(a.resource, Iface) and a.op == "change" and "address" in a.fields
    } | lost_devs
    gone = replaced | {(LINK, f"{container} {ifname}") for container, ifname in lost_routes}
    # Only rules whose kind lost or gained an object can apply: a no-op plan checks none.
    pools = {True: (created, {k for k, _ in created}), False: (gone, {k for k, _ in gone})}
    for key, res in want.items() if gone or created else ():
        if not res.follows:
            continue
        current = actions.get(key)
        if current is not None and current.op != "change":
            continue
        fields = current.fields if current else ()
        rule = next((f for f in res.follows if _applies(f, res, pools[f.on_create], fields)), None)
        if rule is None:
            continue
        if rule.op == "create":
            actions[key] = Action("create", res)
        else:
            cause = _cause(rule.target(res), actions, lost_routes)
            actions[key] = Action(rule.op, res, have[key], (*fields, rule.field), cause)
    # Elements of a table that is deleted or replaced go with it.
    for key, action in list(actions.items()):
        res = action.resource
        table = ("nft-table", f"{res.family} {res.table}") if isinstance(res, NftElement) else None
        if action.op == "delete" and table in replaced:
            del actions[key]


def _because(action: Action) -> str:
    done = {"create": "created", "replace": "replaced", "delete": "deleted", "change": "changed"}[action.op]
    return f"{action.resource.kind} {action.resource.id} is {done}"


def _cause(target: Key, actions: dict[Key, Action], lost_routes: dict[tuple[str, str], str]) -> str:
    if target[0] == LINK:
        container, ifname = target[1].split(" ", 1)
        return lost_routes[container, ifname]
    return _because(actions[target])


def _applies(rule: Follows, res: Resource, pool: tuple[set[Key], set[str]], fields: tuple[str, ...]) -> bool:
    keys, kinds = pool
    if rule.kind not in kinds or (rule.op == "change" and rule.field in fields):
        return False  # nothing of that kind went, or the change already does it
    return rule.target(res) in keys


def ordered(actions: Iterable[Action]) -> list[Action]:
    items = list(actions)
    deletes = sorted(
        (a for a in items if a.op == "delete"), key=lambda a: (-KIND_RANK[a.resource.kind], a.resource.id)
    )
    rest = sorted(
        (a for a in items if a.op != "delete"), key=lambda a: (KIND_RANK[a.resource.kind], a.resource.id)
    )
    return deletes + rest


def summary(actions: list[Action]) -> dict[str, int]:
    """Terraform's counting: a replacement is one to add and one to destroy."""
    add = sum(a.op in ("create", "replace") for a in actions)
    change = sum(a.op == "change" for a in actions)
    destroy = sum(a.op in ("delete", "replace") for a in actions)
    return {"add": add, "change": change, "destroy": destroy}


def conflicts(
    desired: State,
    observed: State,
    foreign_links: set[str],
    foreign_netns: set[str],
    foreign_hosts: set[str],
    missing_netns: set[str],
) -> list[str]:
    """Reasons the desired state cannot be applied on this host without touching what is not ours."""
    out: list[str] = []
    not_ours = "exists and is not managed by this spec"
    for res in desired.resources.values():
        if isinstance(res, Iface) and res.host_ifname in foreign_links:
            out.append(f"container {res.container}: interface {res.host_ifname} {not_ours}")
        elif (link := res.network_link()) is not None and link in foreign_links:
            out.append(f"network {res.id}: interface {link} {not_ours}")
        elif isinstance(res, Netns) and res.path in missing_netns:
            out.append(f"container {res.container}: {res.path} is not a network namespace")
        elif (
            isinstance(res, Netns)
            and not res.adopted
            and (res.path in foreign_netns or _someone_elses(observed.resources.get(res.key, res)))
        ):
            out.append(f"container {res.container}: namespace {res.path} {not_ours}")
        elif isinstance(res, HostsFile) and res.container in foreign_hosts:
            out.append(f"container {res.container}: /etc/netns/{res.container}/hosts {not_ours}")
    return out
