"""Observe one scope's objects on this host, plus what belongs to others (to refuse clashes)."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Collection
from dataclasses import dataclass, field

from .. import names, netns
from ..dns import RESOLV_CONF, RESOLV_CONF_DRIFT, RESOLV_CONF_HEADER
from ..drivers.registry import CHILDREN, DRIVERS
from ..model import Bridge, HostsFile, Iface, Netns, Route, State, Sysctl
from ..nft import Nft
from ..rtnl import Rtnl
from ..scopes import LivePort, SubnetHolder, network_owner
from .links import Link, default_routes, read_addresses, read_links, route_prefixes
from .nft import observe_firewall, other_ports


@dataclass
class Observed:
    state: State = field(default_factory=State)
    # Host links that are not this scope's: names we must not create or touch.
    foreign_links: set[str] = field(default_factory=set)
    # Namespace paths that exist but are not this scope's (foreign or another scope's).
    foreign_netns: set[str] = field(default_factory=set)
    # Containers whose /etc/netns/NAME/hosts exists and is not ours.
    foreign_hosts: set[str] = field(default_factory=set)
    # Adopted namespace paths (from the spec) that are not network namespaces.
    missing_netns: set[str] = field(default_factory=set)
    # Prefixes on host interfaces we do not own: default pools must avoid them.
    host_prefixes: list[ipaddress.IPv4Network] = field(default_factory=list)
    host_prefixes6: list[ipaddress.IPv6Network] = field(default_factory=list)
    # Host interfaces that take their default route from router advertisements (accept_ra=1), which
    # switching IPv6 forwarding on would make them ignore.
    ra_dependent: list[str] = field(default_factory=list)
    # Every host link's MTU by name: a macvlan network's default is its parent's.
    link_mtus: dict[str, int] = field(default_factory=dict)
    # Addresses on host interfaces we do not own, by holder: explicit subnets must avoid them too.
    interface_prefixes: list[SubnetHolder] = field(default_factory=list)
    # Ports other scopes' nft tables publish.
    other_ports: list[LivePort] = field(default_factory=list)


@dataclass
class _NsIface:
    link: Link
    netns: str


def observe(
    scope: str,
    adopted: dict[str, str],
    nft: Nft,
    containers: Collection[str] | None = None,
    *,
    hosts: Collection[str] | None = None,
    only_links: Collection[str] | None = None,
    conflicts: bool = True,
    firewall: bool = True,
) -> Observed:
    """`adopted`: namespace path -> container, for namespaces we use but did not create (from the spec
    and the record); they may live outside /run/netns. `containers`: read only these containers'
    namespaces (the watch daemon's partial observe); host objects and nft are always read. `hosts`:
    read only these containers' hosts files; `only_links`: only the host links of these names (our
    bridges and the veths an apply touched; nothing is then known of the others). `conflicts=False`:
    skip what only the conflict checks use (other scopes' ports, the host's prefixes and routes), as a
    verification does. `firewall=False`: leave our nft tables out (a drift repair that no nft hint
    asked for: listing them is most of an observation's cost)."""
    obs = Observed()
    with Rtnl() as sock:
        links = read_links(sock, only_links)
        read_addresses(sock, links)
        ours = _host_links(scope, links, obs)
        our_indexes = {link.index for link in ours}
        if conflicts:
            obs.host_prefixes = route_prefixes(sock, skip=our_indexes)
            obs.ra_dependent = _ra_dependent(sock, links)
        obs.link_mtus = {link.ifname: link.mtu for link in links.values()}
        for driver in DRIVERS.values():
            for resource in driver.observe_host(ours, links, sock):
                obs.state.add(resource)
    for link in links.values():
        if conflicts and link.index not in our_indexes:
            prefixes = [ipaddress.IPv4Network(a, strict=False) for a in link.addresses]
            obs.host_prefixes.extend(prefixes)
            prefixes6 = [ipaddress.IPv6Network(a, strict=False) for a in link.addresses6]
            obs.host_prefixes6.extend(prefixes6)
            owner = _owner(link)
            held: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [*prefixes, *prefixes6]
            obs.interface_prefixes.extend(SubnetHolder(p, owner, interface=True) for p in held)

    veths = {m[2]: link for link in ours if (m := link.mark) and m[1] == "veth"}
    ns_ifaces = _observe_namespaces(scope, adopted, obs, containers)
    for key, ns_iface in ns_ifaces.items():
        obs.state.add(_iface(key, ns_iface, veths.get(key), links))
    for key, host_link in veths.items():
        container, network = key.split("/", 1)
        if key not in ns_ifaces and (containers is None or container in containers):
            # A peer that lost its container side: only deleting it helps.
            obs.state.add(Iface(container, network, "", "", host_link.ifname, None, up=False))
    _observe_files(scope, obs, hosts)
    if firewall:
        for resource in observe_firewall(nft, scope):
            obs.state.add(resource)
    if conflicts:
        obs.other_ports = other_ports(nft, scope)
    return obs


def _owner(link: Link) -> str:
    """Another scope's bridge or shim is named as its network, as that scope's record names it."""
    m = link.mark
    if m is not None and m[1] in ("network", "shim"):
        return network_owner(m[0], m[2])
    return f"interface {link.ifname}"


def _host_links(scope: str, links: dict[int, Link], obs: Observed) -> list[Link]:
    ours = []
    for link in links.values():
        m = link.mark
        if m is None or m[0] != scope:
            obs.foreign_links.add(link.ifname)
            continue
        ours.append(link)
        if m[1] == "network":
            obs.state.add(
                Bridge(
                    network=m[2],
                    ifname=link.ifname,
                    address=",".join(link.addresses + link.addresses6) or "",
                    mtu=link.mtu,
                    up=link.up,
                    route_localnet=_sysctl(f"net/ipv4/conf/{link.ifname}/route_localnet") == "1",
                    mac=link.mac,
                )
            )
    return ours


def _ra_dependent(sock: Rtnl, links: dict[int, Link]) -> list[str]:
    """Host interfaces whose IPv6 default route came from a router advertisement and that drop such
    routes once forwarding is on (accept_ra=1; 2 keeps them)."""
    out = []
    for route in default_routes(sock, socket.AF_INET6, names.RTPROT_RA):
        link = links.get(route.oif or 0)
        learned = route.proto == names.RTPROT_RA and link is not None and route.gateway is not None
        if learned and link and _sysctl(f"net/ipv6/conf/{link.ifname}/accept_ra") == "1":
            out.append(link.ifname)
    return sorted(set(out))


def _iface(key: str, ns_iface: _NsIface, host: Link | None, host_links: dict[int, Link]) -> Iface:
    container, network = key.split("/", 1)
    link = ns_iface.link
    child = CHILDREN.get(link.kind or "")
    if child is not None:
        return child.observe_child(container, network, ns_iface.netns, link, host_links)
    master = host_links.get(host.master) if host and host.master else None
    return Iface(
        container=container,
        network=network,
        netns=ns_iface.netns,
        ifname=link.ifname,
        host_ifname=host.ifname if host else "",
        bridge=master.ifname if master else "",
        address=",".join(link.addresses + link.addresses6) or "",
        mac=link.mac,
        # Both ends are set together; ends that disagree (a half-applied change) read as MTU 0, which
        # differs from any desired MTU, so the next apply or a rollback sets both again.
        mtu=link.mtu if host is None or host.mtu == link.mtu else 0,
        up=link.up and bool(host and host.up),
    )


def _observe_namespaces(
    scope: str, adopted: dict[str, str], obs: Observed, containers: Collection[str] | None
) -> dict[str, _NsIface]:
    ifaces: dict[str, _NsIface] = {}
    if containers is None:
        paths = [os.path.join(names.NETNS_DIR, n) for n in _listdir(names.NETNS_DIR)]
    else:
        paths = sorted(names.netns_path(c) for c in containers)
        adopted = {path: c for path, c in adopted.items() if c in containers}

    def one(path: str, sock: Rtnl) -> None:
        links = read_links(sock)
        lo = links.get(1)
        mark = lo.mark if lo else None
        owned = mark is not None and mark[0] == scope and mark[1] == "container"
        if not owned and path not in adopted:
            obs.foreign_netns.add(path)
            return
        mine = {
            m[2]: link for link in links.values() if (m := link.mark) and m[0] == scope and m[1] == "iface"
        }
        if owned:
            assert mark is not None
            obs.state.add(Netns(mark[2], path, adopted=False))
        else:
            obs.state.add(Netns(adopted[path], path, adopted=True))
        if not mine:
            return
        read_addresses(sock, links)
        by_index = {link.index: link for link in mine.values()}
        for route in default_routes(sock):
            dev = by_index.get(route.oif or 0)
            # In a namespace we own every default route through our interfaces is ours to manage
            # (an internal network must have none); in an adopted one, only those we marked.
            if dev is not None and route.gateway and (owned or route.proto == names.RTPROT):
                container = dev.mark[2].split("/", 1)[0] if dev.mark else ""
                obs.state.add(Route(container, path, route.gateway, dev.ifname, route.onlink))
        for key, link in mine.items():
            ifaces[key] = _NsIface(link, path)

    for path in netns.each([*paths, *sorted(set(adopted) - set(paths))], one):
        if path in adopted:
            # An unmounted file under /run/netns is what a crash between create and mount leaves:
            # not a namespace of anyone's, and `netns.create` reuses it.
            obs.missing_netns.add(path)
    return ifaces


def _observe_files(scope: str, obs: Observed, hosts: Collection[str] | None) -> None:
    obs.state.add(Sysctl("net.ipv4.ip_forward", _sysctl("net/ipv4/ip_forward") or "0"))
    obs.state.add(Sysctl(names.IPV6_FORWARDING, _sysctl(names.IPV6_FORWARDING.replace(".", "/")) or "0"))
    header = f"{names.HOSTS_HEADER} (scope {scope})"
    for container in _listdir(names.ETC_NETNS_DIR) if hosts is None else sorted(hosts):
        try:
            content = _read(os.path.join(names.ETC_NETNS_DIR, container, "hosts"), 1 << 20)
        except OSError:
            continue
        if content.startswith(header):
            obs.state.add(HostsFile(container, content + _resolv_conf_drift(container)))
        else:
            obs.foreign_hosts.add(container)


def _resolv_conf_drift(container: str) -> str:
    """The resolv.conf beside our hosts file is part of it: when it is gone or no longer ours as we
    wrote it, the observed hosts file says so (a line no desired one has), and the plan rewrites both.
    One someone else wrote is theirs (the executor leaves it too)."""
    try:
        content = _read(os.path.join(names.ETC_NETNS_DIR, container, "resolv.conf"), len(RESOLV_CONF) + 1)
    except FileNotFoundError:
        return RESOLV_CONF_DRIFT
    except OSError:
        return ""
    return RESOLV_CONF_DRIFT if content != RESOLV_CONF and content.startswith(RESOLV_CONF_HEADER) else ""


def _read(path: str, limit: int) -> str:
    """At most `limit` bytes of a file, as text. Two thousand files per observation: plain reads cost
    a tenth of opening them as text files (5 against 61 ms for 1,000 small files), in chunks, since
    a read allocates its whole buffer (one of 1 MiB is an mmap per call)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while limit > 0:
            chunk = os.read(fd, min(limit, _CHUNK))
            chunks.append(chunk)
            limit -= len(chunk)
            if len(chunk) < _CHUNK:  # a regular file's short read is its end
                break
        return b"".join(chunks).decode(errors="replace")
    finally:
        os.close(fd)


_CHUNK = 1 << 14


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _sysctl(name: str) -> str | None:
    try:
        return _read(f"/proc/sys/{name}", 4096).strip()
    except OSError:
        return None
