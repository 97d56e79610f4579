"""`reconciler show`: the observed managed state, shaped like the spec (Ansible's `gathered`).

With a spec, its scope (`{"scope": ..., "networks": ..., "containers": ..., "nftables": ...}`);
without one, every scope that has records or marked objects on this host (`{"scopes": {NAME: ...}}`).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from . import engine
from .dns import supervise
from .drivers.overlay.model import Fdb, Neigh, Vxlan
from .drivers.registry import CHILD_MODES, KIND_OWNERS
from .model import Bridge, Iface, MacvlanShim, Netns, NftElement, Route, State
from .render import nft_value
from .spec import Spec
from .statedir import StateDir


def show(spec: Spec | None, state_dir: StateDir) -> dict[str, Any]:
    resolver = supervise.status(state_dir.path)  # {"pid", "namespaces"}, None when none runs
    if spec is not None:
        scope = engine.scope_of(spec)
        return {
            "scope": scope,
            **gathered(engine.snapshot(state_dir, scope)[scope].state),
            **_store(state_dir, scope),
            "resolver": resolver,
        }
    return {
        "scopes": {
            s: {**gathered(o.state), **_store(state_dir, s)} for s, o in engine.snapshot(state_dir).items()
        },
        "resolver": resolver,
    }


def _store(state_dir: StateDir, scope: str) -> dict[str, Any]:
    """etcd mode: how the daemon last found the cluster store (written by it on every change)."""
    from .store.mode import read_status
    from .watch.status import folder

    found = read_status(folder(state_dir.path), scope)
    return {"store": found} if found is not None else {}


def gathered(observed: State) -> dict[str, Any]:
    """One scope's networks, containers and nft set elements."""
    networks: dict[str, Any] = {}
    containers: dict[str, Any] = {}
    nft: dict[str, list[str]] = {}
    for res in observed.resources.values():
        if isinstance(res, Bridge):
            entry: dict[str, Any] = {"bridge": res.ifname, "up": res.up, "mtu": res.mtu}
            if res.address:
                iface = ipaddress.IPv4Interface(res.address.split(",")[0])
                entry.update(subnet=str(iface.network), gateway=str(iface.ip))
            networks.setdefault(res.network, {}).update(entry)
        elif isinstance(res, MacvlanShim):
            networks.setdefault(res.network, {}).update(
                driver=KIND_OWNERS[res.kind].name,
                host_shim=res.ifname,
                parent=res.parent,
                address=res.address,
            )
        elif isinstance(res, Netns):
            containers.setdefault(res.container, {"interfaces": []}).update(
                netns=res.path, adopted=res.adopted
            )
        elif isinstance(res, Iface):
            _iface(res, containers, networks)
        elif isinstance(res, Route):
            containers.setdefault(res.container, {"interfaces": []})["default_route"] = res.gateway
        elif isinstance(res, Vxlan):
            networks.setdefault(res.network, {}).update(
                vxlan=res.ifname, vni=res.vni, vtep=res.local, vxlan_mtu=res.mtu
            )
        elif isinstance(res, (Fdb, Neigh)):
            remote = networks.setdefault(res.network, {}).setdefault("remote", {})
            if isinstance(res, Fdb):
                remote.setdefault(res.mac, {})["vtep"] = res.dst
            else:
                remote.setdefault(res.mac, {})["ip"] = res.ip
        elif isinstance(res, NftElement):
            nft.setdefault(f"{res.family} {res.table} {res.set}", []).append(nft_value(res.value))
    for c in containers.values():
        c["interfaces"].sort(key=lambda i: i["ifname"])
    return {"networks": networks, "containers": containers, "nftables": nft}


def _iface(res: Iface, containers: dict[str, Any], networks: dict[str, Any]) -> None:
    containers.setdefault(res.container, {"interfaces": []})["interfaces"].append(
        {
            "ifname": res.ifname,
            "network": res.network,
            "address": res.address,
            "mac": res.mac,
            "host_ifname": res.host_ifname,
            "bridge": res.bridge,
            **({"parent": res.parent, "mode": res.mode} if res.parent else {}),
        }
    )
    if res.parent and res.mode:
        # A network of child interfaces has no host object of its own (but a shim): its members show it.
        net = networks.setdefault(res.network, {})
        net.update(driver=CHILD_MODES[res.mode].name, parent=res.parent, mode=res.mode)
        if res.address and "subnet" not in net:
            net["subnet"] = str(ipaddress.IPv4Interface(res.address.split(",")[0]).network)


def text(result: dict[str, Any]) -> str:
    if "scopes" not in result:
        return "\n".join([*_scope_lines(result["scope"], result), supervise.describe(result["resolver"])])
    if not result["scopes"]:
        return "\n".join(["no managed state on this host", supervise.describe(result["resolver"])])
    scopes = "\n\n".join("\n".join(_scope_lines(s, v)) for s, v in sorted(result["scopes"].items()))
    return f"{scopes}\n\n{supervise.describe(result['resolver'])}"


def _scope_lines(scope: str, result: dict[str, Any]) -> list[str]:
    lines = [f"scope {scope}"]
    if "store" in result:
        store = result["store"]
        state = "up" if store["up"] else f"DOWN ({store['error']}): the data plane stays as last programmed"
        lines.append(f"store etcd via {store['endpoint']}: {state} (host {store['host']})")
    for name, net in sorted(result["networks"].items()):
        lines.extend(_network_lines(name, net))
    for name, ctr in sorted(result["containers"].items()):
        lines.append(f"container {name}: {ctr.get('netns', '(namespace missing)')}")
        for i in ctr["interfaces"]:
            where = f"{i['mode']} child of {i['parent']}" if "parent" in i else f"host {i['host_ifname']}"
            lines.append(f"  {i['ifname']} {i['address']} on {i['network']} ({where})")
        if "default_route" in ctr:
            lines.append(f"  default via {ctr['default_route']}")
    for set_name, values in sorted(result["nftables"].items()):
        lines.append(f"nft {set_name}: {', '.join(sorted(values))}")
    return lines


def _network_lines(name: str, net: dict[str, Any]) -> list[str]:
    if "parent" in net:  # children of a host link: no bridge
        on = f"{net.get('mode') or ''} on {net['parent']} {net.get('subnet', '')}"
        head = f"network {name}: {net['driver']} {on}"
        lines = [" ".join(head.split())]
        if "host_shim" in net:
            lines.append(f"  host shim {net['host_shim']} {net['address']}")
        return lines
    lines = [
        f"network {name}: bridge {net.get('bridge', '(missing)')} {net.get('subnet', '')} "
        f"gateway {net.get('gateway', '-')}"
    ]
    if "vxlan" in net:
        lines.append(f"  vxlan {net['vxlan']} vni {net['vni']} local {net['vtep'] or '(any)'}")
    for mac, entry in sorted(net.get("remote", {}).items()):
        lines.append(f"  remote {entry.get('ip', '?')} {mac} via {entry.get('vtep', '(no FDB entry)')}")
    return lines
