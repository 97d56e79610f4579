"""The cluster part of a spec: hosts, overlay networks and services, checked as a whole.

A spec with `hosts:` describes every host of a cluster; each host applies only its own part. Without
`hosts:` the spec describes one implicit host, the one it is applied on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import Problem
from ...families import FAMILY
from ...names import derived_vni
from . import wireguard

if TYPE_CHECKING:
    from ...spec import Broken, ServicePort, Spec

# The name the single implicit host goes by (in the lock file) when the spec declares no hosts.
IMPLICIT_HOST = "local"


def scope_name(spec: Spec) -> str:
    from ...names import DEFAULT_SCOPE

    return spec.name or DEFAULT_SCOPE


def vni_of(spec: Spec, network: str) -> int:
    net = spec.networks[network]
    return net.vni if net.vni is not None else derived_vni(scope_name(spec), network)


def overlay_networks(spec: Spec) -> list[str]:
    return [n for n, net in spec.networks.items() if net.driver == "overlay"]


def host_names(spec: Spec) -> list[str]:
    return list(spec.hosts) or [IMPLICIT_HOST]


def cluster_problems(spec: Spec, broken: Broken) -> list[Problem]:
    """`broken`: what failed the shape checks; a reference to it is not reported again."""
    return [
        *_overlay_problems(spec),
        *_store_problems(spec),
        *_host_problems(spec, broken),
        *wireguard.problems(spec),
        *_service_problems(spec, broken),
    ]


def _store_problems(spec: Spec) -> list[Problem]:
    """With `cluster:` the store knows the hosts: a spec naming them would be a second truth."""
    if spec.cluster is None:
        return []
    out: list[Problem] = []
    if spec.hosts:
        out.append(Problem(("hosts",), "a spec with cluster: names no hosts (they register in the store)"))
    for cname, ctr in spec.containers.items():
        if ctr.host is not None:
            out.append(
                Problem(
                    ("containers", cname, "host"),
                    "a spec with cluster: holds this host's own containers: no host key",
                )
            )
    store = spec.cluster
    if (store.cert_file is None) != (store.key_file is None):
        out.append(Problem(("cluster", "cert_file"), "cert_file and key_file go together"))
    return out


def _overlay_problems(spec: Spec) -> list[Problem]:
    out: list[Problem] = []
    vnis: dict[int, str] = {}
    for name, net in spec.networks.items():
        at = ("networks", name)
        if net.driver != "overlay":
            if net.vni is not None:
                out.append(Problem((*at, "vni"), "vni applies to overlay networks only"))
            if net.encrypted:
                out.append(Problem((*at, "encrypted"), "encrypted applies to overlay networks only"))
            continue
        if not net.subnets:
            out.append(
                Problem((*at, "subnet"), "an overlay network needs a subnet: every host must agree on it")
            )
        vni = vni_of(spec, name)
        if vni in vnis:
            hint = "" if net.vni is not None else " (derived from the name: set vni explicitly)"
            out.append(Problem((*at, "vni"), f"VNI {vni} is already used by network {vnis[vni]}{hint}"))
        vnis[vni] = name
    return out


def _host_problems(spec: Spec, broken: Broken) -> list[Problem]:
    out: list[Problem] = []
    seen: dict[str, str] = {}
    first = next(iter(spec.hosts.items()), None)
    for name, host in spec.hosts.items():
        addr = str(host.address)
        if addr in seen:
            out.append(
                Problem(("hosts", name, "address"), f"{addr} is already the address of host {seen[addr]}")
            )
        elif first is not None and host.address.version != first[1].address.version:
            # A VXLAN device tunnels over one family: every host's tunnel endpoint must be of it.
            family = FAMILY[first[1].address.version]
            msg = f"{addr} is not {family}, as host {first[0]}'s address is: the underlay must be one family"
            out.append(Problem(("hosts", name, "address"), msg))
        seen[addr] = name
    for cname, ctr in spec.containers.items():
        at = ("containers", cname, "host")
        if spec.cluster is not None:
            continue  # reported by _store_problems
        if ctr.host is None and spec.hosts:
            out.append(Problem(at, "a spec with hosts must say which host each container runs on"))
        elif ctr.host is not None and ctr.host not in spec.hosts and not broken.hides("hosts", ctr.host):
            known = ", ".join(spec.hosts) or "none declared"
            out.append(Problem(at, f"unknown host {ctr.host!r} (hosts: {known})"))
    return out


def _service_problems(spec: Spec, broken: Broken) -> list[Problem]:
    out: list[Problem] = []
    published: dict[tuple[str, int], str] = {}
    for cname, ctr in spec.containers.items():
        for pm in ctr.port_mappings():
            published.setdefault((pm.protocol, pm.host_port), f"container {cname}")
    for sname, svc in spec.services.items():
        at = ("services", sname)
        if sname in spec.containers or sname in broken.named("containers"):
            out.append(
                Problem(at, f"service {sname} has the name of a container: names must resolve to one address")
            )
        net = spec.networks.get(svc.network)
        # A network that failed its own checks is not also reported here.
        unknown = net is None and not broken.hides("networks", svc.network)
        if unknown or (net is not None and net.driver != "overlay"):
            out.append(Problem((*at, "network"), f"{svc.network!r} is not an overlay network of this spec"))
        if not svc.backends:
            out.append(Problem((*at, "backends"), "a service needs at least one backend"))
        for index, backend in enumerate(svc.backends):
            member = spec.containers.get(backend)
            if member is None and broken.hides("containers", backend):
                continue
            if member is None and spec.cluster is not None:
                continue  # another host's container: the store resolves it
            if member is None:
                out.append(Problem((*at, "backends", index), f"unknown container {backend!r}"))
            elif svc.network not in member.attachments():
                out.append(
                    Problem((*at, "backends", index), f"container {backend} is not on network {svc.network}")
                )
        for index, sp in enumerate(svc.service_ports()):
            out.extend(_published_clash(sp, (*at, "ports", index), f"service {sname}", published))
    return out


def _published_clash(
    sp: ServicePort, at: tuple[str | int, ...], who: str, published: dict[tuple[str, int], str]
) -> list[Problem]:
    if sp.published is None:
        return []
    key = (sp.protocol, sp.published)
    if key in published:
        return [
            Problem(at, f"host port {sp.published}/{sp.protocol} is already published by {published[key]}")
        ]
    published[key] = who
    return []
