"""The macvlan driver's hooks. Its modules are imported when a hook runs: `validate` loads the
registry for the spec checks only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

from ..driver import Attachment, Base, Executor, NetworkPart, NoStage
from .modes import MODES

if TYPE_CHECKING:
    from ...apply.context import Context
    from ...model import Iface, Resource, State
    from ...observe.host import Observed
    from ...observe.links import Link
    from ...rtnl import Rtnl
    from ...spec import IP, Net, Network, Spec
    from ...statedir import ScopeRecord
    from ..driver import Stage
    from ..overlay.clusteripam import Allocation


class MacvlanDriver(Base):
    name = "macvlan"
    # ns-policy: network policy inside its containers' namespaces, the one hook their traffic crosses.
    kinds: ClassVar[tuple[str, ...]] = ("vlan", "shim", "ns-policy")
    # Its containers are on the parent's LAN: the host's IP stack, NAT and published ports are bypassed.
    routed = False
    child_kind: ClassVar[str | None] = "macvlan"
    child_modes = frozenset(MODES)  # the modes a spec gives

    def gateway(self, net: Network, subnet: Net) -> IP | None:
        """Only when given: the LAN's router is not ours to pick."""
        return net.gateway if subnet.version == 4 else net.gateway6

    def network(self, part: NetworkPart) -> list[Resource]:
        from .desired import host_objects

        return host_objects(part)

    def attachment(self, att: Attachment) -> Iface:
        from .desired import child

        return child(att)

    def executors(self) -> Mapping[str, Executor]:
        from ...policy import nsfw
        from . import apply

        return {"vlan": apply.execute_vlan, "shim": apply.execute_shim, nsfw.KIND: nsfw.execute}

    def observe_host(self, ours: list[Link], links: dict[int, Link], sock: Rtnl) -> list[Resource]:
        from .observe import macvlan_host

        return macvlan_host(ours, links, sock)

    def observe_child(
        self, container: str, network: str, netns: str, link: Link, host: dict[int, Link]
    ) -> Iface:
        from .observe import child_iface

        return child_iface(container, network, netns, link, host)

    def create_child(self, ctx: Context, res: Iface) -> None:
        from .apply import create_child

        create_child(ctx, res)

    def observe(self, scope: str, state: State) -> list[Resource]:
        from ...policy.nsfw import observe_ns_policies

        return observe_ns_policies(state, scope)

    def stage(self, scope: str, observed: Observed) -> Stage:
        from ...policy.nsfw import observe_ns_policies

        stage = _Parents(scope, observed.link_mtus)
        stage.resources = observe_ns_policies(observed.state, scope)
        return stage

    def facts(self, spec: Spec, name: str, net: Network, common: list[str]) -> list[str]:
        return [net.driver, f"parent {net.parent}, {net.mode} mode", *common]


class _Parents(NoStage):
    """Gives networks without `mtu` their parent's; refuses a spec whose parent interface cannot be used
    on this host; adds the policy tables of its containers' namespaces."""

    def __init__(self, scope: str, link_mtus: Mapping[str, int]) -> None:
        super().__init__()
        self.scope = scope
        self.link_mtus = link_mtus

    def extend_desired(self, local: Spec, record: ScopeRecord, desired: State) -> None:
        from ...policy.nsfw import desired_ns_policies

        mine = {n for n, net in local.networks.items() if net.driver == MacvlanDriver.name}
        for res in desired_ns_policies(local, record, self.scope, mine):
            desired.add(res)

    def narrow(self, spec: Spec, host: str | None, lock: Allocation | None, key_file: str) -> Spec:
        from .parents import parent_mtus

        return parent_mtus(spec, self.link_mtus)

    def conflicts(self, local: Spec, desired: State, observed: State, foreign_links: set[str]) -> list[str]:
        from .parents import parent_problems, vlan_supported

        return parent_problems(local, desired, observed, foreign_links, vlan_supported)
