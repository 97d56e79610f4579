"""Plans for people (Terraform style) and for machines (JSON)."""

from __future__ import annotations

from typing import Any

from .diff import Action, summary
from .drivers.overlay.model import Fdb, Neigh, Vxlan
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

SIGNS = {"create": "  +", "change": "  ~", "replace": "-/+", "delete": "  -"}


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
    if isinstance(res, (NftTable, Sysctl)):
        return ""
    return res.id


def _title(res: Resource) -> str:
    if isinstance(res, NftElement):
        return f"nft-element {res.family} {res.table} {res.set}"
    return f"{res.kind} {res.id}"


def line(action: Action) -> str:
    res = action.resource
    head = f"{SIGNS[action.op]} {_title(res)}"
    if action.op in ("change", "replace") and action.before is not None:
        before, after = action.before.attrs(), res.attrs()
        changes = ", ".join(f"{f}: {_short(before.get(f))} -> {_short(after.get(f))}" for f in action.fields)
        return f"{head}: {changes}"
    text = describe(res)
    return f"{head}: {text}" if text else head


def _short(value: Any) -> str:
    text = str(value) if value not in (None, "") else "(none)"
    return text if len(text) <= 60 else f"{text[:24]}...({len(text)} chars)"


def text_plan(actions: list[Action]) -> str:
    if not actions:
        return "No changes. The host matches the spec."
    s = summary(actions)
    lines = [line(a) for a in actions]
    lines.append("")
    lines.append(f"Plan: {s['add']} to add, {s['change']} to change, {s['destroy']} to destroy.")
    return "\n".join(lines)


def json_plan(actions: list[Action]) -> dict[str, Any]:
    return {
        "actions": [
            {
                "op": a.op,
                "kind": a.resource.kind,
                "id": a.resource.id,
                "fields": list(a.fields),
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
