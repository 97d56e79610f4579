"""One host's part of a cluster spec: which host we are, what is local, and the overlay objects.

The engine calls these around its usual steps: `prepare` (after observing) picks the host and
allocates cluster-wide addresses; `local_spec` is what the bridge machinery builds as before;
`extend_desired` adds the overlay objects (the resolver serves the whole cluster's names: dns/records.py).
(`diff.plan` re-creates the entries a replaced VXLAN device takes with it.)
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ... import names
from ...endpoints import endpoints
from ...errors import HostConflict
from ...families import IPV6_MIN_MTU
from ...model import Bridge, NftTable, Resource, State
from ...policy.nft import addresses_of, desired_policy, replace_policy
from ...statedir import ScopeRecord
from ..bridge.desired import gateway
from . import wireguard
from .clusteripam import GROUPS, GROUPS6, Allocation, allocate
from .clusterspec import IMPLICIT_HOST, vni_of
from .model import Fdb, Neigh, Vxlan
from .observe import OverlayObserved
from .services import desired_services, table
from .wgmodel import Wireguard
from .wireguard import Tunnel

if TYPE_CHECKING:
    from ...spec import Spec

VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8
VXLAN_OVERHEAD6 = 70  # the same over an IPv6 underlay (its header is 40)
DEFAULT_UNDERLAY_MTU = 1500


@dataclass(frozen=True)
class Cluster:
    spec: Spec  # the whole cluster's spec
    scope: str
    me: str
    vtep: str  # this host's underlay address; "" for the implicit single host
    underlay_mtu: int
    alloc: Allocation
    tunnel: Tunnel | None  # this host's WireGuard side, when an overlay is encrypted


def prepare(
    spec: Spec, scope: str, host: str | None, lock: Allocation | None, obs: OverlayObserved, key_file: str
) -> Cluster:
    if spec.cluster is not None:
        # Resolved specs (reconciler/store/resolve.py) have no `cluster:`: this one skipped the store.
        raise HostConflict(
            "a spec with cluster: is applied against its store: `reconciler watch` or `reconciler apply`"
        )
    me, vtep = select_host(spec, host, obs.local_addresses)
    tunnel = wireguard.prepare(spec, me, key_file)
    mtu = obs.local_addresses.get(vtep, DEFAULT_UNDERLAY_MTU) if vtep else DEFAULT_UNDERLAY_MTU
    return Cluster(spec, scope, me, vtep, mtu, allocate(spec, lock), tunnel)


def select_host(spec: Spec, requested: str | None, local_addresses: dict[str, int]) -> tuple[str, str]:
    """(host name, underlay address): `--host NAME`, or the host whose address is configured here."""
    if not spec.hosts:
        if requested is not None:
            raise HostConflict(f"--host {requested}: the spec declares no hosts")
        return IMPLICIT_HOST, ""
    known = ", ".join(spec.hosts)
    if requested is not None:
        if requested not in spec.hosts:
            raise HostConflict(f"--host {requested}: not one of the spec's hosts ({known})")
        address = str(spec.hosts[requested].address)
        if address not in local_addresses:
            raise HostConflict(
                f"host {requested}'s address {address} is not configured on this machine: wrong --host?"
            )
        return requested, address
    found = [n for n, h in spec.hosts.items() if str(h.address) in local_addresses]
    if len(found) != 1:
        what = "none" if not found else f"several ({', '.join(found)})"
        raise HostConflict(f"{what} of the spec's hosts ({known}) have their address here: pass --host NAME")
    return found[0], str(spec.hosts[found[0]].address)


def local_spec(cluster: Cluster) -> Spec:
    """This host's containers, the bridge networks they use (unused ones exist on every host), and
    every overlay network, its MTU fitted to the underlay."""
    spec = cluster.spec
    containers = {c: ctr for c, ctr in spec.containers.items() if ctr.host in (None, cluster.me)}
    used = {n for ctr in containers.values() for n in ctr.attachments()}
    anywhere = {n for ctr in spec.containers.values() for n in ctr.attachments()}
    networks = {}
    for n, net in spec.networks.items():
        if net.driver == "overlay":
            if cluster.tunnel and net.encrypted:  # VXLAN between IPv4 tunnel addresses, inside WireGuard
                overhead = VXLAN_OVERHEAD + wireguard.overhead(spec, cluster.me)
            else:
                overhead = VXLAN_OVERHEAD6 if ":" in cluster.vtep else VXLAN_OVERHEAD
            mtu = net.mtu if net.mtu is not None else cluster.underlay_mtu - overhead
            if net.has_ipv6 and mtu < IPV6_MIN_MTU:
                raise HostConflict(
                    f"network {n}: the underlay's MTU {cluster.underlay_mtu} leaves {mtu} for the overlay, "
                    f"below {IPV6_MIN_MTU}, the least IPv6 works with; raise the underlay's MTU or drop IPv6"
                )
            networks[n] = net.model_copy(update={"mtu": mtu})
        elif n in used or n not in anywhere:
            networks[n] = net
    return spec.model_copy(update={"containers": containers, "networks": networks})


def merge_record(cluster: Cluster, record: ScopeRecord) -> None:
    """Overlay addresses come from the cluster allocation, not from this host's record."""
    for n, a in cluster.alloc.items():
        rec = record.networks[n]
        rec.subnet, rec.addresses = a.subnet, dict(a.containers)
        rec.subnet6, rec.addresses6 = a.subnet6, dict(a.containers6)


def endpoint_mac(scope: str, network: str, name: str, address: str | None) -> str:
    """MACs are derived, never exchanged: from the IPv4 address (as on bridge networks), on an
    IPv6-only network from the names, as `desired` does for an interface without one."""
    if address:
        return names.container_mac(ipaddress.IPv4Address(address))
    return names.stable_mac(scope, name, network)


def _node(host: str) -> str:
    """A host's node address goes by a name no container can have (names have no spaces)."""
    return f"host {host}"


def extend_desired(cluster: Cluster, local: Spec, record: ScopeRecord, state: State) -> None:
    spec, scope = cluster.spec, cluster.scope
    node_addr: dict[int, dict[str, str]] = {4: {}, 6: {}}
    for n, a in cluster.alloc.items():
        net = local.networks[n]
        bridge = names.bridge_ifname(scope, n)
        cidrs = []
        for subnet_text, (_, services, hosts) in a.families():
            subnet = ipaddress.ip_network(subnet_text)
            node = a.group(hosts)[cluster.me]
            node_addr[subnet.version][bridge] = node
            single = subnet.max_prefixlen  # the node address and VIPs: /32 and /128
            cidrs += [f"{gateway(net, subnet)}/{subnet.prefixlen}", f"{node}/{single}"]
            cidrs += [f"{v}/{single}" for v in a.group(services).values()]
        old = state.resources[("bridge", n)]
        assert isinstance(old, Bridge)
        mac = endpoint_mac(scope, n, _node(cluster.me), a.hosts.get(cluster.me))
        state.add(replace(old, address=",".join(sorted(cidrs)), mac=mac))
        dev = names.vxlan_ifname(scope, n)
        vtep, port = _vtep(cluster, cluster.me, n), wireguard.vxlan_port(spec, n)
        state.add(Vxlan(n, dev, vni_of(spec, n), vtep, port, bridge, mtu=net.mtu))
        for resource in _remote_entries(cluster, n, dev):
            state.add(resource)
    if cluster.tunnel is not None:
        decl = table(scope)
        state.add(NftTable(decl.family, decl.name, decl.fingerprint()))
        state.add(wireguard.guard(decl.family, decl.name))
        state.add(wireguard.device(spec, scope, cluster.me, cluster.tunnel, cluster.underlay_mtu))
    allocs = {s: cluster.alloc[svc.network] for s, svc in spec.services.items()}
    for version, family, (containers, services) in ((4, "ip", GROUPS[:2]), (6, "ip6", GROUPS6[:2])):
        vips = {s: a.group(services)[s] for s, a in allocs.items() if a.group(services)}
        targets = {s: [allocs[s].group(containers)[b] for b in spec.services[s].backends] for s in vips}
        for resource in desired_services(spec, scope, vips, targets, node_addr[version], family):
            state.add(resource)
    _policy(cluster, local, record, state)


def _policy(cluster: Cluster, local: Spec, record: ScopeRecord, state: State) -> None:
    """Policy elements for the whole cluster: every host checks what it routes to any selected
    container, and passes what other hosts translated (and checked) for a VIP."""
    if not cluster.spec.policies or not cluster.alloc:  # no overlay network: the layout's elements stand
        return
    addresses = addresses_of(endpoints(local, record))
    for a in cluster.alloc.values():
        for c, ip in [*a.containers.items(), *a.containers6.items()]:
            known = addresses.setdefault(c, [])
            if ipaddress.ip_address(ip) not in known:  # a local container's is there already
                known.append(ipaddress.ip_address(ip))
    nodes = [
        ipaddress.ip_address(ip)
        for a in cluster.alloc.values()
        for ip in [*a.hosts.values(), *a.hosts6.values()]
    ]
    table = names.nft_table(cluster.scope)
    replace_policy(state, desired_policy(cluster.spec, table, addresses, sorted(set(nodes), key=str)))


def _remote_entries(cluster: Cluster, network: str, dev: str) -> list[Resource]:
    """Per endpoint on another host: one FDB entry for its MAC, a neighbour entry per address."""
    spec, a = cluster.spec, cluster.alloc[network]
    members = a.containers or a.containers6
    remote = [(c, spec.containers[c].host, a.containers.get(c), a.containers6.get(c)) for c in members]
    remote += [(_node(h), h, a.hosts.get(h), a.hosts6.get(h)) for h in a.hosts or a.hosts6]
    out: list[Resource] = []
    for name, host, ip, ip6 in remote:
        if host is None or host == cluster.me or not (ip or ip6):
            continue
        mac = endpoint_mac(cluster.scope, network, name, ip)
        out.append(Fdb(network, dev, mac, _vtep(cluster, host, network)))
        out += [Neigh(network, dev, address, mac) for address in (ip, ip6) if address]
    return out


def _vtep(cluster: Cluster, host: str, network: str) -> str:
    """A host's VXLAN endpoint on a network: its tunnel address if the network is encrypted, else its
    underlay address ("" for the implicit single host)."""
    return wireguard.vtep(cluster.spec, host, network) if cluster.spec.hosts else cluster.vtep


def conflicts(desired: State, obs: OverlayObserved, foreign_links: set[str]) -> list[str]:
    out = []
    for res in desired.resources.values():
        if isinstance(res, Wireguard) and res.ifname in foreign_links:
            out.append(f"WireGuard device {res.ifname} exists and is not managed by this spec")
        if not isinstance(res, Vxlan):
            continue
        if res.ifname in foreign_links:
            out.append(
                f"network {res.network}: interface {res.ifname} exists and is not managed by this spec"
            )
        other = obs.foreign_vnis.get((res.vni, res.port))
        if other is not None:
            out.append(f"network {res.network}: VNI {res.vni} is already used by VXLAN device {other}")
    return out
