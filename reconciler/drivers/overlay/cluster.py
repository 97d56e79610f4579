"""One host's part of a cluster spec: which host we are, what is local, and the overlay objects.

The engine calls these around its usual steps: `prepare` (after observing) picks the host and
allocates cluster-wide addresses; `local_spec` is what the bridge machinery builds as before;
`extend_desired` adds the overlay objects (the resolver serves the whole cluster's names: dns/records.py).
(`diff.plan` re-creates the entries a replaced VXLAN device takes with it.)
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

from ... import names
from ...errors import HostConflict
from ...model import Bridge, Resource, State
from ...spec import Spec
from ...statedir import ScopeRecord
from ..bridge.desired import gateway
from .clusteripam import Allocation, allocate
from .clusterspec import IMPLICIT_HOST, overlay_networks, vni_of
from .model import Fdb, Neigh, Vxlan
from .observe import OverlayObserved
from .services import desired_services
from .xfrm import missing_feature

VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8
DEFAULT_UNDERLAY_MTU = 1500


@dataclass(frozen=True)
class Cluster:
    spec: Spec  # the whole cluster's spec
    scope: str
    me: str
    vtep: str  # this host's underlay address; "" for the implicit single host
    underlay_mtu: int
    alloc: Allocation


def prepare(
    spec: Spec, scope: str, host: str | None, lock: Allocation | None, obs: OverlayObserved
) -> Cluster:
    me, vtep = select_host(spec, host, obs.local_addresses)
    encrypted = [n for n in overlay_networks(spec) if spec.networks[n].encrypted]
    if encrypted:
        missing = missing_feature()
        reason = (
            f"this kernel lacks {missing}"
            if missing
            else "installing IPsec SAs and policies is not implemented yet "
            "(see reconciler.drivers.overlay.xfrm)"
        )
        raise HostConflict(
            f"refusing to apply encrypted overlay network {', '.join(encrypted)}: {reason}; "
            "nothing was changed (an encrypted network is never sent in plaintext)"
        )
    mtu = obs.local_addresses.get(vtep, DEFAULT_UNDERLAY_MTU) if vtep else DEFAULT_UNDERLAY_MTU
    return Cluster(spec, scope, me, vtep, mtu, allocate(spec, lock))


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
            mtu = net.mtu if net.mtu is not None else cluster.underlay_mtu - VXLAN_OVERHEAD
            networks[n] = net.model_copy(update={"mtu": mtu})
        elif n in used or n not in anywhere:
            networks[n] = net
    return spec.model_copy(update={"containers": containers, "networks": networks})


def merge_record(cluster: Cluster, record: ScopeRecord) -> None:
    """Overlay addresses come from the cluster allocation, not from this host's record."""
    for n, a in cluster.alloc.items():
        record.networks[n].subnet = a.subnet
        record.networks[n].addresses = dict(a.containers)


def extend_desired(cluster: Cluster, local: Spec, record: ScopeRecord, state: State) -> None:
    spec, scope = cluster.spec, cluster.scope
    node_addr: dict[str, str] = {}
    for n, a in cluster.alloc.items():
        net = local.networks[n]
        subnet = ipaddress.IPv4Network(a.subnet)
        bridge = names.bridge_ifname(scope, n)
        node = a.hosts[cluster.me]
        node_addr[bridge] = node
        cidrs = [
            f"{gateway(net, subnet)}/{subnet.prefixlen}",
            f"{node}/32",
            *(f"{v}/32" for v in a.services.values()),
        ]
        old = state.resources[("bridge", n)]
        assert isinstance(old, Bridge)
        state.add(
            replace(
                old, address=",".join(sorted(cidrs)), mac=names.container_mac(ipaddress.IPv4Address(node))
            )
        )
        dev = names.vxlan_ifname(scope, n)
        state.add(Vxlan(n, dev, vni_of(spec, n), cluster.vtep, names.VXLAN_PORT, bridge, mtu=net.mtu))
        for resource in _remote_entries(cluster, n, dev):
            state.add(resource)
    vips = {s: cluster.alloc[svc.network].services[s] for s, svc in spec.services.items()}
    targets = {
        s: [cluster.alloc[svc.network].containers[b] for b in svc.backends]
        for s, svc in spec.services.items()
    }
    for resource in desired_services(spec, scope, vips, targets, node_addr):
        state.add(resource)


def _remote_entries(cluster: Cluster, network: str, dev: str) -> list[Resource]:
    spec, a = cluster.spec, cluster.alloc[network]
    remote = [(ip, spec.containers[c].host) for c, ip in a.containers.items()]
    remote += [(ip, h) for h, ip in a.hosts.items()]
    out: list[Resource] = []
    for ip, host in remote:
        if host is None or host == cluster.me:
            continue
        mac = names.container_mac(ipaddress.IPv4Address(ip))
        out += [Fdb(network, dev, mac, str(spec.hosts[host].address)), Neigh(network, dev, ip, mac)]
    return out


def conflicts(desired: State, obs: OverlayObserved, foreign_links: set[str]) -> list[str]:
    out = []
    for res in desired.resources.values():
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
