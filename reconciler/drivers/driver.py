"""What the core knows of a network driver: the hooks below, found by driver name in `registry.py`.

As the kernel's `rtnl_link_ops`: a driver implements the few hooks it needs (`Base` does nothing for the
rest) and the core never names one. The plan needs no hook: a driver's resource kinds declare their
order and what goes with what (`model.Resource.rank`, `follows`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, ClassVar, NamedTuple, Protocol

if TYPE_CHECKING:
    from ..apply.context import Context
    from ..diff import Action
    from ..endpoints import Endpoint
    from ..errors import Problem
    from ..firewall.decl import TableDecl
    from ..model import Iface, Resource, State
    from ..observe.host import Observed
    from ..observe.links import Link
    from ..rtnl import Rtnl
    from ..spec import IP, Broken, Net, Network, Spec
    from ..statedir import ScopeRecord
    from .overlay.clusteripam import Allocation

Executor = Callable[["Context", "Action"], None]


class NetworkPart(NamedTuple):
    """One network of the spec as a driver builds its host side."""

    scope: str
    name: str
    net: Network
    record: ScopeRecord
    members: list[Endpoint]  # its containers' attachments
    existing_links: frozenset[str]  # host links that are not ours


class Attachment(NamedTuple):
    """One container's attachment as a driver builds its interface; `address` and `mac` are chosen.
    (Tuples: one per container and network, built faster than frozen dataclasses.)"""

    scope: str
    net: Network
    ep: Endpoint
    netns: str
    ifname: str
    address: str | None  # address/prefixlen
    mac: str


class Stage(Protocol):
    """A driver's part in one run of `engine.prepare`, for a driver with work beyond one network's
    objects (the overlay: which host this is, cluster-wide addresses, remote entries)."""

    resources: list[Resource]  # what it observed of its own kinds (merged into the observed state)

    def narrow(self, spec: Spec, host: str | None, lock: Allocation | None, key_file: str) -> Spec:
        """The part of the spec this host applies; `key_file` holds this host's WireGuard key."""
        ...

    def merge_record(self, record: ScopeRecord) -> None: ...

    def extend_desired(self, local: Spec, record: ScopeRecord, desired: State) -> None: ...

    def conflicts(self, local: Spec, desired: State, observed: State, foreign_links: set[str]) -> list[str]:
        """Reasons the desired state cannot be applied on this host."""
        ...


class Driver(Protocol):
    name: ClassVar[str]
    # Its traffic passes the host's IP stack: forwarding is on and our nftables rules apply to it.
    routed: ClassVar[bool]
    # A change of one container touches only that container's objects (session applies it alone).
    per_container: ClassVar[bool]
    # Its networks' desired state reads nothing of the host but the prefixes in use (IPAM): a spec of
    # such networks may be compiled once and kept while its inputs stay the same (speccache.py).
    compiled_alone: ClassVar[bool]
    # The link kind of container interfaces it makes as children of a host link (None: veths).
    child_kind: ClassVar[str | None]
    child_modes: ClassVar[frozenset[str]]  # their modes (Iface.mode), distinct across drivers
    kinds: ClassVar[tuple[str, ...]]  # the resource kinds it owns: those `executors` carries out

    def problems(self, spec: Spec, broken: Broken) -> list[Problem]:
        """Its checks of a spec beyond those of `spec.py`; a reference to what is `broken` (failed the
        shape checks) is not reported again."""
        ...

    def gateway(self, net: Network, subnet: Net) -> IP | None:
        """IPAM: the network's gateway address, kept free of containers."""
        ...

    def network(self, part: NetworkPart) -> list[Resource]:
        """The desired host objects of one network."""
        ...

    def attachment(self, att: Attachment) -> Iface:
        """The desired interface of one container on one network."""
        ...

    def executors(self) -> Mapping[str, Executor]:
        """Resource kind -> executor, for the kinds it owns."""
        ...

    def observe_host(self, ours: list[Link], links: dict[int, Link], sock: Rtnl) -> list[Resource]:
        """Its host objects among our links (`ours`) of the core's one dump."""
        ...

    def observe_child(
        self, container: str, network: str, netns: str, link: Link, host: dict[int, Link]
    ) -> Iface:
        """A container interface of `child_kind`, as observed."""
        ...

    def observe(self, scope: str, state: State) -> list[Resource]:
        """Objects it reads itself, beyond the core's dump `state` (verification reads them again)."""
        ...

    def stage(self, scope: str, observed: Observed) -> Stage:
        """Its part in one run of `engine.prepare` on the host as `observed`; observes what else it needs."""
        ...

    def create_child(self, ctx: Context, res: Iface) -> None:
        """Creates a container interface of `child_kind` in its namespace."""
        ...

    def after_firewall(self, actions: list[Action]) -> None:
        """What of an apply's `actions` must wait for its nftables transaction."""
        ...

    def tables(self, scope: str) -> Mapping[str, TableDecl]:
        """Its nftables tables of the scope, by family (beside `firewall.layout`'s)."""
        ...

    def facts(self, spec: Spec, name: str, net: Network, common: list[str]) -> list[str]:
        """What `graph` prints for a network: the driver's facts and the `common` ones."""
        ...


class NoStage:
    """The part of a driver that has nothing to do beyond its networks' objects."""

    def __init__(self) -> None:
        self.resources: list[Resource] = []

    def narrow(self, spec: Spec, host: str | None, lock: Allocation | None, key_file: str) -> Spec:
        return spec

    def merge_record(self, record: ScopeRecord) -> None:
        pass

    def extend_desired(self, local: Spec, record: ScopeRecord, desired: State) -> None:
        pass

    def conflicts(self, local: Spec, desired: State, observed: State, foreign_links: set[str]) -> list[str]:
        return []


class Base:
    """Defaults for every hook but `gateway`, `network` and `attachment`: a driver overrides what it needs."""

    name: ClassVar[str]
    routed: ClassVar[bool] = True
    per_container: ClassVar[bool] = False
    compiled_alone: ClassVar[bool] = False
    child_kind: ClassVar[str | None] = None
    child_modes: ClassVar[frozenset[str]] = frozenset()
    kinds: ClassVar[tuple[str, ...]] = ()

    def problems(self, spec: Spec, broken: Broken) -> list[Problem]:
        return []

    def executors(self) -> Mapping[str, Executor]:
        return {}

    def observe_host(self, ours: list[Link], links: dict[int, Link], sock: Rtnl) -> list[Resource]:
        return []

    def observe_child(
        self, container: str, network: str, netns: str, link: Link, host: dict[int, Link]
    ) -> Iface:
        raise NotImplementedError(f"{type(self).__name__} makes no child interfaces")

    def observe(self, scope: str, state: State) -> list[Resource]:
        return []

    def stage(self, scope: str, observed: Observed) -> Stage:
        return NoStage()

    def create_child(self, ctx: Context, res: Iface) -> None:
        raise NotImplementedError(f"{type(self).__name__} makes no child interfaces")

    def after_firewall(self, actions: list[Action]) -> None:
        pass

    def tables(self, scope: str) -> Mapping[str, TableDecl]:
        return {}

    def facts(self, spec: Spec, name: str, net: Network, common: list[str]) -> list[str]:
        return [net.driver, *common]
