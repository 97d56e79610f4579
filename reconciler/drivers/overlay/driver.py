"""The overlay driver's hooks: a bridge network (the bridge driver's objects) joined across hosts by a
VXLAN device, with cluster-wide addresses and services."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

from ..driver import Attachment, Base, Executor, NetworkPart

if TYPE_CHECKING:
    from ...errors import Problem
    from ...firewall.decl import TableDecl
    from ...model import Iface, Resource, State
    from ...observe.host import Observed
    from ...spec import IP, Broken, Net, Network, Spec
    from ..driver import Stage


class OverlayDriver(Base):
    name = "overlay"
    kinds: ClassVar[tuple[str, ...]] = ("vxlan", "fdb", "neigh", "wireguard")

    def problems(self, spec: Spec, broken: Broken) -> list[Problem]:
        from .clusterspec import cluster_problems

        return cluster_problems(spec, broken)

    def gateway(self, net: Network, subnet: Net) -> IP:
        from ..bridge.desired import gateway

        return gateway(net, subnet)

    def network(self, part: NetworkPart) -> list[Resource]:
        from ..bridge.desired import bridge

        return bridge(part)  # `stage` adds the node address, the VIPs and the VXLAN device

    def attachment(self, att: Attachment) -> Iface:
        from ..bridge.desired import veth

        return veth(att)

    def executors(self) -> Mapping[str, Executor]:
        from .apply import execute_fdb, execute_neigh, execute_vxlan
        from .wgstate import execute_wireguard

        return {
            "vxlan": execute_vxlan,
            "fdb": execute_fdb,
            "neigh": execute_neigh,
            "wireguard": execute_wireguard,
        }

    def observe(self, scope: str, state: State) -> list[Resource]:
        from .observe import observe_overlay

        return observe_overlay(scope).resources

    def stage(self, scope: str, observed: Observed) -> Stage:
        from .stage import ClusterStage

        return ClusterStage(scope)

    def tables(self, scope: str) -> Mapping[str, TableDecl]:
        from .services import table

        return {"ip": table(scope), "ip6": table(scope, "ip6")}

    def facts(self, spec: Spec, name: str, net: Network, common: list[str]) -> list[str]:
        from .clusterspec import vni_of

        encrypted = ["encrypted (WireGuard)"] if net.encrypted else []
        return [net.driver, *common, f"vni {vni_of(spec, name)}", *encrypted]
