"""Plans for people (Terraform style) and for machines (JSON)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .diff import Action, summary
from .drivers.overlay.model import Fdb, Neigh, Vxlan
from .drivers.overlay.wgmodel import Wireguard
from .model import (
    Bridge,
    HostsFile,
    Iface,
    MacvlanShim,
    Netns,
    NftElement,
    NftTable,
    Resource,
    Route,
    Sysctl,
    Vlan,
)

if TYPE_CHECKING:
    from .engine import Outcome

SIGNS = {"create": "  +", "change": "  ~", "replace": "-/+", "delete": "  -"}
# A changed value longer than this is shown cut around its first difference, with CONTEXT before it.
SHORT = 60
CONTEXT = 12


def nft_value(value: Any) -> str:
    if isinstance(value, list):  # a map element: key : value
        return " : ".join(nft_value(v) for v in value)
    if isinstance(value, dict) and "concat" in value:
        return " . ".join(nft_value(v) for v in value["concat"])
    if isinstance(value, dict) and "prefix" in value:
        return f"{value['prefix']['addr']}/{value['prefix']['len']}"
    return str(value)


def describe(res: Resource) -> str:
    if isinstance(res, Bridge):
        return f"{res.ifname} {res.address or ''}".strip()
    if isinstance(res, Netns):
        return res.path + (" (adopted)" if res.adopted else "")
    if isinstance(res, Iface) and res.parent:
        return f"{res.ifname} {res.address or ''} (macvlan {res.mode} on {res.parent})"
    if isinstance(res, Iface):
        where = f"host {res.host_ifname} on {res.bridge}" if res.bridge else f"host {res.host_ifname}"
        return f"{res.ifname} {res.address or ''} ({where})"
    if isinstance(res, Route):
        return f"default via {res.gateway} dev {res.dev}" + (" onlink" if res.onlink else "")
    if isinstance(res, Vlan):
        return f"802.1Q VLAN {res.vid} on {res.base}"
    if isinstance(res, MacvlanShim):
        return f"{res.ifname} {res.address} on {res.parent}, routes to {res.routes or '(none)'}"
    if isinstance(res, HostsFile):
        return f"/etc/netns/{res.container}/hosts ({len(res.content.splitlines()) - 1} entries)"
    if isinstance(res, NftElement):
        return nft_value(res.value)
    if isinstance(res, Vxlan):
        return f"{res.ifname} vni {res.vni} local {res.local or '(any)'} port {res.port} on {res.bridge}"
    if isinstance(res, Fdb):
        return f"{res.mac} via {res.dst} dev {res.dev}"
    if isinstance(res, Neigh):
        return f"{res.ip} lladdr {res.mac} dev {res.dev}"
    if isinstance(res, Wireguard):
        return f"{res.address} port {res.port}, {len(res.peers)} peers"
    if isinstance(res, (NftTable, Sysctl)):
        return ""
    return res.id


def _title(res: Resource) -> str:
    if isinstance(res, NftElement):
        return f"nft-element {res.family} {res.table} {res.set}"
    return f"{res.kind} {res.id}"


def line(action: Action) -> str:
    """One plan line: what is created or deleted, or the fields that change (and which of them forces
    the replacement), and for a cascade the change elsewhere that causes it."""
    res = action.resource
    head = f"{SIGNS[action.op]} {_title(res)}"
    changes = action.changes()
    if changes:
        text = ", ".join(_change(action, f, before, after) for f, (before, after) in changes.items())
    else:
        text = describe(res)
    if action.cause:
        text = f"{text} (because {action.cause})".lstrip()
    return f"{head}: {text}" if text else head


def _change(action: Action, name: str, before: Any, after: Any) -> str:
    listed = _entries(action.resource, name)
    if listed is not None:
        if isinstance(before, str) and isinstance(after, str):
            before, after = _differing_lines(before, after)
        old, new = listed(before), listed(after)
        old_set, new_set = set(old), set(new)
        added = [f"+ {e}" for e in new if e not in old_set]
        removed = [f"- {e}" for e in old if e not in new_set]
        # A hosts file is its content: the entries alone say it; other fields keep their name.
        label = "" if isinstance(action.resource, HostsFile) else f"{name}: "
        return label + ("; ".join(added + removed) or "same entries, reordered")
    forces = " (forces replacement)" if action.op == "replace" and name in action.resource.immutable else ""
    old_text, new_text = _pair(before, after)
    return f"{name}: {old_text} -> {new_text}{forces}"


def _differing_lines(before: str, after: str) -> tuple[str, str]:
    """The lines of each text that the other lacks: listing what changed in two hosts files of a
    network of 1,000 then costs their differences, not their lengths (a line in both is no entry
    that comes or goes, however it is split)."""
    old, new = before.splitlines(), after.splitlines()
    old_set, new_set = set(old), set(new)
    return "\n".join(x for x in old if x not in new_set), "\n".join(x for x in new if x not in old_set)


def _entries(res: Resource, name: str) -> Callable[[Any], list[str]] | None:
    """How to split a field that holds a list (a hosts file's lines, a shim's routes), so that a plan
    line names the entries that come and go instead of two long texts."""
    if isinstance(res, HostsFile) and name == "content":
        return lambda text: [
            " ".join(ln.split()) for ln in (text or "").splitlines() if ln.strip() and not ln.startswith("#")
        ]
    if isinstance(res, MacvlanShim) and name == "routes":
        return lambda text: [r for r in (text or "").split(",") if r]
    if isinstance(res, Wireguard) and name == "peers":
        return lambda peers: [f"peer {key} endpoint {at} allowed-ips {ip}" for key, at, ip in peers or ()]
    if isinstance(getattr(res, name, None), tuple):  # (set, element JSON) pairs: a namespace's table
        return lambda pairs: [f"{s} {nft_value(json.loads(v))}" for s, v in pairs or ()]
    return None


def _pair(before: Any, after: Any) -> tuple[str, str]:
    """Both values as text, shortened around where they differ, so that the two never read the same."""
    old, new = (str(v) if v not in (None, "") else "(none)" for v in (before, after))
    if len(old) <= SHORT and len(new) <= SHORT:
        return old, new
    start = 0
    while start < min(len(old), len(new)) and old[start] == new[start]:
        start += 1
    start = max(0, start - CONTEXT)
    return _cut(old, start), _cut(new, start)


def _cut(text: str, start: int) -> str:
    part = text[start : start + SHORT]
    return ("..." if start else "") + part + ("..." if start + SHORT < len(text) else "")


def text_plan(actions: list[Action]) -> str:
    if not actions:
        return "No changes. The host matches the spec."
    s = summary(actions)
    lines = [line(a) for a in actions]
    lines.append("")
    total = f"Plan: {s['add']} to add, {s['change']} to change, {s['destroy']} to destroy"
    replaced = sum(a.op == "replace" for a in actions)
    if replaced:  # Terraform's counting, said, so that the numbers add up to the lines above
        which = "1 replacement" if replaced == 1 else f"{replaced} replacements"
        total += f" ({which} (-/+), each counted once to add and once to destroy)"
    lines.append(total + ".")
    return "\n".join(lines)


def json_plan(actions: list[Action]) -> dict[str, Any]:
    """`fields` and `changes`: what really differs, with its values before and after; `because`: the
    change elsewhere that forces a cascaded action. `before`/`after`: the whole objects."""
    return {
        "actions": [
            {
                "op": a.op,
                "kind": a.resource.kind,
                "id": a.resource.id,
                "fields": list(a.changes()),
                "changes": {f: {"before": b, "after": v} for f, (b, v) in a.changes().items()},
                **({"because": a.cause} if a.cause else {}),
                "before": _before(a),
                "after": None if a.op == "delete" else a.resource.describe(),
            }
            for a in actions
        ],
        "summary": summary(actions),
    }


def _before(action: Action) -> dict[str, Any] | None:
    if action.op == "delete":
        return action.resource.describe()
    return action.before.describe() if action.before else None


def plan_output(outcome: Outcome, fmt: str, colour: bool) -> str:
    """What `apply` and `destroy` print on stdout, run here or by the daemon for a handed-over apply
    (watch/handoff.py), so that both print the same."""
    if fmt == "json":
        result = {**json_plan(outcome.actions), "applied": outcome.applied, "notices": outcome.notices}
        return json.dumps(result, indent=2) + "\n"
    from .term import colour_plan

    text = text_plan(outcome.actions)
    lines = [colour_plan(text) if colour else text]
    if outcome.actions:
        lines.append("Applied." if outcome.applied else "Dry run: nothing was changed.")
    lines.extend(f"note: {notice}" for notice in outcome.notices)
    return "\n".join(lines) + "\n"
