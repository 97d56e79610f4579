"""What a sandboxed host holds, in a comparable form, read with iproute2 and nft (not the reconciler).

`fingerprint` is everything an apply may touch: links, addresses and main-table routes of the host and
of every namespace, the namespace list, nftables, the hosts files, the state directory and IPv4
forwarding. Kernel-assigned values that carry no meaning (ifindex, random MACs of host ends and bridges,
timers, the lock's pid) are dropped, so two hosts built from the same spec compare equal.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sandbox import Host

# One process in the sandbox gathers everything: a python script is cheaper than an `ip` call per namespace.
GATHER = r"""
import json, os, subprocess, sys
full = sys.argv[1:] == ["full"]
def ip(*args, ns=None):
    argv = ["ip", *(["-n", ns] if ns else []), "-j", *args]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return json.loads(out or "[]")
def space(ns):
    links = ip("-d", "link", "show", ns=ns)
    out = {
        "links": links,
        "addrs": ip("-4", "addr", "show", ns=ns),
        "routes": ip("-4", "route", "show", "table", "main", ns=ns),
    }
    if full:  # every family and table, with details: for the byte-identical check of foreign state
        out["all_addrs"] = ip("-d", "addr", "show", ns=ns)
        out["all_routes"] = ip("-d", "route", "show", "table", "all", ns=ns)
        out["all_routes6"] = ip("-6", "-d", "route", "show", "table", "all", ns=ns)
    return out
netns = sorted(l.split()[0] for l in subprocess.run(["ip", "netns", "list"], capture_output=True,
               text=True).stdout.splitlines() if l.strip())
files = {}
for top in ("/etc/netns", "/var/lib/reconciler", "/run/netns"):
    for root, dirs, fs in os.walk(top):
        for f in fs:
            p = os.path.join(root, f)
            try:
                files[p] = open(p, errors="replace").read() if top != "/run/netns" else ""
            except OSError as e:
                files[p] = repr(e)
print(json.dumps({
    "host": space(None),
    "netns": {ns: space(ns) for ns in netns},
    "nft": json.loads(subprocess.run(["nft", "-j", "list", "ruleset"], capture_output=True,
                                     text=True, check=True).stdout)["nftables"],
    "files": files,
    "forward": open("/proc/sys/net/ipv4/ip_forward").read().strip(),
}))
"""


def raw(host: Host, full: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(host.run(["python3", "-c", GATHER, *(["full"] if full else [])]).stdout)
    return data


def _link(link: dict[str, Any], inside: bool) -> dict[str, Any]:
    kind = link.get("linkinfo", {}).get("info_kind")
    out = {
        "ifname": link["ifname"],
        "kind": kind,
        "alias": link.get("ifalias"),
        "master": link.get("master"),
        "mtu": link.get("mtu"),
        "up": "UP" in link.get("flags", []),
    }
    if inside and link["ifname"] != "lo":
        out["mac"] = link.get("address")  # set by the reconciler from the address; host ends are random
    return out


def _space(space: dict[str, Any], inside: bool) -> dict[str, Any]:
    return {
        "links": sorted((_link(x, inside) for x in space["links"]), key=lambda x: x["ifname"]),
        "addrs": sorted(
            f"{a['ifname']} {i['local']}/{i['prefixlen']}" for a in space["addrs"] for i in a["addr_info"]
        ),
        "routes": sorted(json.dumps(r, sort_keys=True) for r in space["routes"]),
    }


def _nft(objects: list[dict[str, Any]]) -> list[str]:
    out = []
    for obj in objects:
        if "metainfo" in obj:
            continue
        ((kind, body),) = obj.items()
        body = {k: v for k, v in body.items() if k != "handle"}
        if "elem" in body:
            body["elem"] = sorted(json.dumps(e, sort_keys=True) for e in body["elem"])
        out.append(json.dumps({kind: body}, sort_keys=True))
    return sorted(out)


def fingerprint(host: Host) -> dict[str, Any]:
    data = raw(host)
    # The resolver's run-time files (pid, log, socket, lock) differ per run; its records do not. A
    # compiled-spec cache entry must be there as after a clean run, its bytes may differ: a pickle,
    # derived from the records and the spec (and checked against them before use), not host state.
    files = {
        p: "" if p.startswith(CACHE) else c
        for p, c in data["files"].items()
        if not p.endswith("/lock") and not _resolver_runtime(p)
    }
    return {
        "host": _space(data["host"], inside=False),
        "netns": {ns: _space(s, inside=True) for ns, s in data["netns"].items()},
        "nft": _nft(data["nft"]),
        "files": files,
        "forward": data["forward"],
    }


CACHE = "/var/lib/reconciler/cache/"


def _resolver_runtime(path: str) -> bool:
    return path.startswith("/var/lib/reconciler/dns/") and not path.startswith(
        "/var/lib/reconciler/dns/scopes/"
    )


def addresses(print_: dict[str, Any]) -> Counter[str]:
    """Every IPv4 address on the host and in its namespaces (loopback aside), with how often it occurs."""
    found: Counter[str] = Counter()
    for space in [print_["host"], *print_["netns"].values()]:
        for entry in space["addrs"]:
            addr = entry.split()[1].split("/")[0]
            if not addr.startswith("127."):
                found[addr] += 1
    return found


def recorded_addresses(print_: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(scope file, network, address) of every IPAM record in the state directory."""
    out = []
    for path, text in print_["files"].items():
        if Path(path).parent == Path("/var/lib/reconciler") and path.endswith(".json"):
            for net, rec in json.loads(text)["networks"].items():
                out.extend((Path(path).stem, net, a) for a in rec["addresses"].values())
    return out


def assert_no_duplicates(print_: dict[str, Any]) -> None:
    twice = {a: n for a, n in addresses(print_).items() if n > 1}
    assert not twice, f"addresses handed out more than once: {twice}"
    recorded = recorded_addresses(print_)
    assert len(recorded) == len(set(recorded)), f"an address recorded twice: {recorded}"


def diff(a: dict[str, Any], b: dict[str, Any], path: str = "") -> list[str]:
    """Readable differences between two fingerprints (the first few), for assertion messages."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                out.append(f"{path}/{k}: only in {'second' if k in b else 'first'}")
            else:
                out.extend(diff(a[k], b[k], f"{path}/{k}"))
        return out[:20]
    if isinstance(a, list) and isinstance(b, list) and a != b:
        sa, sb = {json.dumps(x, sort_keys=True) for x in a}, {json.dumps(x, sort_keys=True) for x in b}
        return [f"{path}: only first {sorted(sa - sb)[:3]}, only second {sorted(sb - sa)[:3]}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def settled(host: Host, expected: dict[str, Any], what: str, wait: float = 20.0) -> dict[str, Any]:
    """The host's fingerprint once it equals `expected`; fails after `wait` seconds. The kernel tears a
    deleted namespace down in the background, so its host-side veth ends linger for a moment."""
    deadline = time.monotonic() + wait
    while True:
        found = fingerprint(host)
        if found == expected:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}:\n  " + "\n  ".join(diff(expected, found)))
        time.sleep(0.2)


def steady(host: Host, wait: float = 20.0) -> dict[str, Any]:
    """The fingerprint once no host veth end outlives its container's namespace (see `settled`)."""
    deadline = time.monotonic() + wait
    while True:
        found = fingerprint(host)
        containers = {
            alias.split(":")[3].split("/")[0]
            for link in found["host"]["links"]
            if (alias := link["alias"] or "").startswith("netreconciler:") and ":veth:" in alias
        }
        if containers <= set(found["netns"]) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)
