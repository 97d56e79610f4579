"""Kernel names and ownership marks: how a spec object maps to kernel objects and back.

Names are derived, never stored: the same spec always yields the same names, and interface names
stay within the kernel's 15 characters by hashing when the readable form does not fit.
"""

from __future__ import annotations

import hashlib
import ipaddress

IFNAMSIZ = 15
MARK_PREFIX = "netreconciler"
DEFAULT_SCOPE = "default"
# Routes we add carry this protocol number (iproute2 shows it as "proto 211"): the route's mark.
RTPROT = 211
NETNS_DIR = "/run/netns"
ETC_NETNS_DIR = "/etc/netns"
HOSTS_HEADER = "# managed by netreconciler"
IPV6_FORWARDING = "net.ipv6.conf.all.forwarding"
RTPROT_RA = 9  # the kernel's mark on routes it learned from router advertisements
# The record key of a network's host shim address (host_access); no container name starts with '@'.
HOST_SHIM = "@host"


def _digest(*parts: str, length: int) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:length]


def bridge_ifname(scope: str, network: str) -> str:
    readable = f"nr-{network}"
    if scope == DEFAULT_SCOPE and len(readable) <= IFNAMSIZ:
        return readable
    return "nr-" + _digest(scope, network, length=IFNAMSIZ - 3)


def host_veth_ifname(scope: str, container: str, network: str) -> str:
    return "nrv" + _digest(scope, container, network, length=IFNAMSIZ - 3)


def shim_ifname(scope: str, network: str) -> str:
    return "nrm" + _digest(scope, network, length=IFNAMSIZ - 3)


def container_ifname(index: int) -> str:
    return f"eth{index}"


def mark(scope: str, kind: str, key: str) -> str:
    """The ifalias we give every link we create: `netreconciler:<scope>:<kind>:<key>`."""
    return f"{MARK_PREFIX}:{scope}:{kind}:{key}"


def parse_mark(alias: str | None) -> tuple[str, str, str] | None:
    if not alias or not alias.startswith(MARK_PREFIX + ":"):
        return None
    parts = alias.split(":", 3)
    if len(parts) != 4:
        return None
    return parts[1], parts[2], parts[3]


def container_mac(address: ipaddress.IPv4Address) -> str:
    """Docker's scheme (02:42 + the IPv4 address): a re-created interface keeps its MAC, so peers'
    ARP caches stay valid."""
    return "02:42:" + ":".join(f"{b:02x}" for b in address.packed)


def stable_mac(*parts: str) -> str:
    """A locally administered unicast MAC derived from names, for interfaces without an address."""
    return "02:" + ":".join(_digest(*parts, length=10)[i : i + 2] for i in range(0, 10, 2))


def nft_table(scope: str) -> str:
    return MARK_PREFIX if scope == DEFAULT_SCOPE else f"{MARK_PREFIX}_{scope}"


def scope_of_table(name: str) -> str | None:
    """The scope whose nft table this is (`nft_table`'s inverse), or None for a table not ours."""
    if name == MARK_PREFIX:
        return DEFAULT_SCOPE
    scope = name.removeprefix(f"{MARK_PREFIX}_")
    return scope if scope != name else None


def netns_path(container: str) -> str:
    return f"{NETNS_DIR}/{container}"


# VNIs below 4096 are left to hand-made VXLANs (they often mirror VLAN ids).
VNI_FIRST, VNI_LAST = 4096, (1 << 24) - 1
VXLAN_PORT = 4789  # IANA's VXLAN port


def derived_vni(scope: str, network: str) -> int:
    """An overlay's VNI when the spec gives none: every host derives the same one from the names."""
    return VNI_FIRST + int(_digest(scope, network, length=8), 16) % (VNI_LAST - VNI_FIRST + 1)


def vxlan_ifname(scope: str, network: str) -> str:
    return "nrx" + _digest(scope, network, length=IFNAMSIZ - 3)


def wireguard_ifname(scope: str) -> str:
    """The scope's WireGuard device (one per host, for every encrypted overlay of the scope)."""
    return "nrw" + _digest(scope, "wireguard", length=IFNAMSIZ - 3)
