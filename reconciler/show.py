"""`reconciler show`: the observed managed state, shaped like the spec (Ansible's `gathered`)."""

from __future__ import annotations

import ipaddress
from typing import Any

from . import engine
from .drivers.overlay.model import Fdb, Neigh, Vxlan
from .model import Bridge, Iface, MacvlanShim, Netns, NftElement, Route
from .render import nft_value
from .spec import Spec
from .statedir import StateDir


def show(spec: Spec | None, state_dir: StateDir) -> dict[str, Any]:
    scope = engine.scope_of(spec) if spec else "default"
    observed = engine.snapshot(scope, state_dir).state
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
            networks[res.network] = {"host_shim": res.ifname, "parent": res.parent, "address": res.address}
        elif isinstance(res, Netns):
            containers.setdefault(res.container, {"interfaces": []}).update(
                netns=res.path, adopted=res.adopted
            )
        elif isinstance(res, Iface):
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
    return {"scope": scope, "networks": networks, "containers": containers, "nftables": nft}


def text(result: dict[str, Any]) -> str:
    lines = [f"scope {result['scope']}"]
    for name, net in sorted(result["networks"].items()):
        if "host_shim" in net:
            lines.append(f"network {name}: host shim {net['host_shim']} {net['address']} on {net['parent']}")
            continue
        lines.append(
            f"network {name}: bridge {net.get('bridge', '(missing)')} {net.get('subnet', '')} "
            f"gateway {net.get('gateway', '-')}"
        )
        if "vxlan" in net:
            lines.append(f"  vxlan {net['vxlan']} vni {net['vni']} local {net['vtep'] or '(any)'}")
        for mac, entry in sorted(net.get("remote", {}).items()):
            lines.append(f"  remote {entry.get('ip', '?')} {mac} via {entry.get('vtep', '(no FDB entry)')}")
    for name, ctr in sorted(result["containers"].items()):
        lines.append(f"container {name}: {ctr.get('netns', '(namespace missing)')}")
        for i in ctr["interfaces"]:
            where = f"macvlan {i['mode']} on {i['parent']}" if "parent" in i else f"host {i['host_ifname']}"
            lines.append(f"  {i['ifname']} {i['address']} on {i['network']} ({where})")
        if "default_route" in ctr:
            lines.append(f"  default via {ctr['default_route']}")
    for set_name, values in sorted(result["nftables"].items()):
        lines.append(f"nft {set_name}: {', '.join(sorted(values))}")
    return "\n".join(lines)
