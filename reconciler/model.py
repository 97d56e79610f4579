"""The state model shared by desired and observed state.

One type per kind of kernel object, as nmstate does: `desired.py` builds these from the spec, `observe`
builds them from the kernel, and `diff.plan` compares the two by key. A field whose desired value is
None means "don't care" and is not compared.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Literal

Key = tuple[str, str]


@dataclass(frozen=True)
class Follows:
    """What goes with what: an object of the declaring kind goes along when the `kind` object named by
    its `by` fields (joined by a space) is replaced or deleted, or with `on_create` also created.
    `op` is what the plan then does to it ("replace", "change" or "create"), naming `field`."""

    kind: str
    by: tuple[str, ...]
    op: Literal["create", "change", "replace"]
    field: str = ""
    on_create: bool = False

    def target(self, res: Resource) -> Key:
        return (self.kind, " ".join(getattr(res, name) or "" for name in self.by))


@dataclass(frozen=True)
class Resource:
    kind: ClassVar[str]
    # Fields whose change cannot be applied in place: the object is deleted and created again.
    immutable: ClassVar[tuple[str, ...]] = ()
    # The objects this one goes along with (`diff._cascade`); the first that applies wins.
    follows: ClassVar[tuple[Follows, ...]] = ()
    # Held in the namespace of its `container` (beyond the core's netns, iface and route).
    namespaced: ClassVar[bool] = False

    @property
    def id(self) -> str:
        raise NotImplementedError

    @property
    def key(self) -> Key:
        return (self.kind, self.id)

    def attrs(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _field_names(type(self))}

    def differences(self, observed: Resource) -> list[str]:
        """Names of the fields that differ, skipping fields this (desired) object does not care about."""
        if self == observed:
            return []  # the common case, at C speed
        return [
            name
            for name in _field_names(type(self))
            if (value := getattr(self, name)) is not None and getattr(observed, name, None) != value
        ]

    def network_link(self) -> str | None:
        """The host link this object is of a network's own: a name we must not take from others."""
        return None

    def describe(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


# dataclasses.fields() walks the class on each call: it dominated plan() on 200 containers.
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    found = _FIELD_NAMES.get(cls)
    if found is None:
        found = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return found


@dataclass(frozen=True)
class Sysctl(Resource):
    kind = "sysctl"
    name: str
    value: str

    @property
    def id(self) -> str:
        return self.name


@dataclass(frozen=True)
class Bridge(Resource):
    kind = "bridge"
    immutable = ("ifname",)
    network: str
    ifname: str
    address: str | None = None  # gateway/prefixlen
    mtu: int | None = None
    up: bool = True
    route_localnet: bool = True  # lets the host reach published ports on 127.0.0.1
    mac: str | None = None  # overlay bridges: derived from the host's node address

    @property
    def id(self) -> str:
        return self.network

    def network_link(self) -> str:
        return self.ifname


@dataclass(frozen=True)
class Vlan(Resource):
    """An 802.1Q sub-interface we create as a macvlan parent (`BASE.VID`); shared by the networks on it."""

    kind = "vlan"
    immutable = ("base", "vid")
    ifname: str
    base: str
    vid: int
    up: bool = True

    @property
    def id(self) -> str:
        return self.ifname


@dataclass(frozen=True)
class MacvlanShim(Resource):
    """host_access: a bridge-mode macvlan on the host with a /32 (and a /128) and a host route to each
    container address;
    the parent itself never receives what its macvlan children send."""

    kind = "shim"
    immutable = ("ifname", "parent")
    # The kernel deletes macvlan children with their parent.
    follows = (Follows("vlan", ("parent",), "replace", "parent"),)
    network: str
    ifname: str
    parent: str
    address: str | None = None  # address/32[,address6/128]
    mac: str | None = None
    mtu: int | None = None
    routes: str | None = None  # sorted, comma-separated container addresses/32 and /128
    up: bool = True

    @property
    def id(self) -> str:
        return self.network

    def network_link(self) -> str:
        return self.ifname


@dataclass(frozen=True)
class Netns(Resource):
    """A container's network namespace; `adopted` ones exist already and are never created or deleted."""

    kind = "netns"
    immutable = ("path", "adopted")
    container: str
    path: str
    adopted: bool = False

    @property
    def id(self) -> str:
        return self.container


@dataclass(frozen=True)
class Iface(Resource):
    """A veth pair: `ifname` inside the container, `host_ifname` enslaved to the network's bridge; or,
    with `parent` set, a macvlan child of that host link, born in the container (no host end)."""

    kind = "iface"
    immutable = ("ifname", "host_ifname", "netns", "parent", "mode")
    follows = (
        Follows("netns", ("container",), "replace", "netns"),
        Follows("vlan", ("parent",), "replace", "parent"),  # a child goes with its parent
        Follows("bridge", ("network",), "change", "bridge"),  # a new bridge takes its ports again
    )
    container: str
    network: str
    netns: str
    ifname: str
    host_ifname: str
    bridge: str | None
    address: str | None = None  # address/prefixlen inside the container
    mac: str | None = None
    mtu: int | None = None
    up: bool = True
    parent: str | None = None
    mode: str | None = None  # macvlan mode

    @property
    def id(self) -> str:
        return f"{self.container}/{self.network}"


# Not a kind: the pseudo-kind of a container's interface name, (LINK, "CONTAINER IFNAME"), that the
# plan marks lost when the kernel takes the interface (and the routes through it) away.
LINK = "link"


@dataclass(frozen=True)
class Route(Resource):
    """The container's default route of one family (IPv4's is keyed by the container alone, as before
    IPv6: plans and records of IPv4-only specs read as they did)."""

    kind = "route"
    # LINK: the interface it goes through (`diff._cascade` marks the ones the kernel takes away).
    follows = (
        Follows("netns", ("container",), "replace", "dev"),
        Follows(LINK, ("container", "dev"), "replace", "dev"),
    )
    container: str
    netns: str
    gateway: str
    dev: str
    onlink: bool = False  # a /32's gateway lies outside the subnet

    @property
    def id(self) -> str:
        return f"{self.container} ipv6" if ":" in self.gateway else self.container


@dataclass(frozen=True)
class HostsFile(Resource):
    kind = "hosts"
    container: str
    content: str

    @property
    def id(self) -> str:
        return self.container


@dataclass(frozen=True)
class NftTable(Resource):
    """One of our tables with its chains, rules and set declarations (the skeleton), not elements.

    `fingerprint` summarizes the skeleton so a flushed chain or a deleted set shows up as drift."""

    kind = "nft-table"
    immutable = ("fingerprint",)
    family: str
    name: str
    fingerprint: str

    @property
    def id(self) -> str:
        return f"{self.family} {self.name}"


@dataclass(frozen=True)
class NftElement(Resource):
    """One element of one of our sets or maps; `value` is the element in libnftables JSON form."""

    kind = "nft-element"
    # Elements of a new or replaced table are created with it.
    follows = (Follows("nft-table", ("family", "table"), "create", on_create=True),)
    family: str
    table: str
    set: str
    value_json: str

    @property
    def id(self) -> str:
        return f"{self.family} {self.table} {self.set} {self.value_json}"

    @property
    def value(self) -> Any:
        return json.loads(self.value_json)


# The order objects are created in; deletions run in the reverse order.
KIND_ORDER = [
    "sysctl",
    "bridge",
    "vlan",
    "shim",
    "wireguard",
    "vxlan",
    "fdb",
    "neigh",
    "netns",
    "iface",
    "route",
    "hosts",
    "nft-table",
    "nft-element",
    "ns-policy",
]
KIND_RANK = {kind: i for i, kind in enumerate(KIND_ORDER)}


@dataclass
class State:
    resources: dict[Key, Resource] = field(default_factory=dict)

    def add(self, resource: Resource) -> None:
        self.resources[resource.key] = resource

    def of_kind(self, kind: str) -> list[Resource]:
        return [r for (k, _), r in self.resources.items() if k == kind]


def container_of(res: Resource) -> str | None:
    """The container whose namespace holds `res`; None for host-level resources."""
    return res.container if isinstance(res, Netns | Iface | Route) or res.namespaced else None  # type: ignore[attr-defined]
