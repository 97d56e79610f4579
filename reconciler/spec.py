"""The desired-state spec: strict pydantic models plus the semantic checks pydantic cannot express.

`Spec.model_validate` checks shapes; `semantic_problems` checks the spec as a whole (overlaps,
duplicates, references). Both report field paths; `specload` turns paths into file lines.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic.json_schema import SkipJsonSchema

from .drivers.macvlan.modes import Mode as MacvlanMode
from .drivers.overlay.wgkeys import valid_public_key
from .errors import Problem
from .families import FAMILY, IPV6_MIN_MTU

# A container name becomes a namespace file name and a host name: no '/', no '..', no shell magic.
# \Z, not $: `$` also matches before a trailing newline, which a quoted YAML key can carry.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
SCOPE_RE = re.compile(r"^[a-z][a-z0-9_]{0,15}\Z")
DRIVERS_SUPPORTED = {"bridge", "macvlan", "overlay"}
# A host interface name as the kernel takes it (IFNAMSIZ - 1), readable and shell-safe.
IFNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}\Z")
# Options that only mean something for one driver; setting one on another driver is an error.
BRIDGE_ONLY = ("internal", "icc")
MACVLAN_ONLY = ("parent", "mode", "host_access", "ipam")
MAX_PORT_RANGE = 1024
IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Net = ipaddress.IPv4Network | ipaddress.IPv6Network
# The drivers that carry IPv6 so far; the others refuse it by name rather than half-configure it.
IPV6_DRIVERS = {"bridge", "macvlan", "overlay"}


def _check_name(value: str, what: str) -> str:
    if not valid_name(value):
        raise ValueError(
            f"invalid {what} name {value!r}: use 1-63 letters, digits, '_', '.', '-', "
            "starting with a letter or digit, without '..'"
        )
    return value


def valid_name(value: object) -> bool:
    return isinstance(value, str) and bool(NAME_RE.match(value)) and ".." not in value


def _dotted_only(value: object) -> object:
    # pydantic's IP types also accept ints and bytes: `subnet: 42` would silently mean 0.0.0.42/32.
    if value is not None and not isinstance(value, str):
        raise ValueError(f"must be written in dotted IPv4 notation, not {value!r}")
    return value


def _per_family(parse: Any, what: str) -> tuple[BeforeValidator, WithJsonSchema]:
    """`KEY: VALUE` or `KEY: [VALUE, VALUE]`, at most one per family, parsed to a tuple."""

    def check(value: object) -> object:
        if value is None:
            return ()
        items = value if isinstance(value, list) else [value]
        out: list[Any] = []
        for item in items:
            if not isinstance(item, str):
                raise ValueError(
                    f"must be written in dotted IPv4 notation, not {item!r} (or in IPv6 notation)"
                )
            try:
                parsed = parse(item)
            except ValueError:
                family = FAMILY[6 if ":" in item else 4]
                raise ValueError(f"Input is not a valid {family} {what}: {item!r}") from None
            twin = next((o for o in out if o.version == parsed.version), None)
            if twin is not None:
                raise ValueError(
                    f"a second {FAMILY[parsed.version]} {what} ({parsed} after {twin}): "
                    "give at most one per family"
                )
            out.append(parsed)
        return tuple(out)

    one = {"type": "string"}
    schema = {"anyOf": [one, {"type": "array", "items": one, "maxItems": 2}, {"type": "null"}]}
    return (BeforeValidator(check), WithJsonSchema(schema))


def _first(values: tuple[Any, ...], version: int) -> Any:
    return next((v for v in values if v.version == version), None)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Network(_Model):
    driver: Literal["bridge", "overlay", "macvlan"] = "bridge"
    # One value or a list of at most one per family; read through the per-family properties below.
    subnets: Annotated[tuple[Net, ...], *_per_family(ipaddress.ip_network, "network")] = Field(
        (), alias="subnet"
    )
    gateways: Annotated[tuple[IP, ...], *_per_family(ipaddress.ip_address, "address")] = Field(
        (), alias="gateway"
    )
    ip_ranges: Annotated[tuple[Net, ...], *_per_family(ipaddress.ip_network, "network")] = Field(
        (), alias="ip_range"
    )
    ipv6: StrictBool = False  # an IPv6 subnet from the ULA pool when none is given
    internal: StrictBool = False
    icc: StrictBool = True
    mtu: Annotated[StrictInt, Field(ge=68, le=65535)] | None = None
    # macvlan: the host interface the containers' interfaces are children of (NAME or NAME.VLAN_ID).
    parent: str | None = None
    mode: MacvlanMode = "bridge"
    host_access: StrictBool = False  # a macvlan shim on the host, so the host reaches its containers
    ipam: Literal["default", "none"] = "default"  # none: L2 only, addresses are configured elsewhere
    # overlay only: the VXLAN network identifier (derived from the name when omitted); `encrypted`
    # sends its VXLAN traffic through the hosts' WireGuard tunnel (drivers/overlay/wireguard.py).
    vni: Annotated[StrictInt, Field(ge=1, le=16777215)] | None = None
    encrypted: StrictBool = False
    # Gone with IPsec: kept only to say what replaces it (every value is refused).
    key_file: SkipJsonSchema[None] = Field(None, exclude=True)

    @field_validator("key_file", mode="before")
    @classmethod
    def _key_file(cls, v: object) -> None:
        raise ValueError(
            "key_file is gone: an encrypted network uses each host's WireGuard key "
            "(`reconciler keygen` on the host, its public key as hosts.NAME.public_key)"
        )

    @property
    def subnet(self) -> ipaddress.IPv4Network | None:
        return _first(self.subnets, 4)  # type: ignore[no-any-return]

    @property
    def subnet6(self) -> ipaddress.IPv6Network | None:
        return _first(self.subnets, 6)  # type: ignore[no-any-return]

    @property
    def gateway(self) -> ipaddress.IPv4Address | None:
        return _first(self.gateways, 4)  # type: ignore[no-any-return]

    @property
    def gateway6(self) -> ipaddress.IPv6Address | None:
        return _first(self.gateways, 6)  # type: ignore[no-any-return]

    @property
    def ip_range(self) -> ipaddress.IPv4Network | None:
        return _first(self.ip_ranges, 4)  # type: ignore[no-any-return]

    @property
    def ip_range6(self) -> ipaddress.IPv6Network | None:
        return _first(self.ip_ranges, 6)  # type: ignore[no-any-return]

    @property
    def has_ipv4(self) -> bool:
        """IPv4 unless the only subnets given are IPv6 ones (an IPv6-only network)."""
        return self.subnet is not None or self.subnet6 is None

    @property
    def has_ipv6(self) -> bool:
        return self.subnet6 is not None or self.ipv6

    @field_validator("parent")
    @classmethod
    def _parent(cls, v: str | None) -> str | None:
        if v is not None and not IFNAME_RE.match(v):
            raise ValueError(
                f"invalid parent interface name {v!r}: use 1-15 letters, digits, '_', '.', '-', "
                "starting with a letter or digit"
            )
        return v

    def vlan(self) -> tuple[str, int] | None:
        """(base, VLAN id) when the parent is named as an 802.1Q sub-interface, `BASE.VID`."""
        m = re.match(r"^(?P<base>.+)\.(?P<vid>\d+)\Z", self.parent or "")
        return (m["base"], int(m["vid"])) if m else None


class Attachment(_Model):
    ipv4_address: ipaddress.IPv4Address | None = None
    ipv6_address: ipaddress.IPv6Address | None = None
    aliases: list[str] = []

    @field_validator("ipv4_address", "ipv6_address", mode="before")
    @classmethod
    def _dotted(cls, v: object) -> object:
        return _dotted_only(v)

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, v: list[str]) -> list[str]:
        return [_check_name(a, "alias") for a in v]


@dataclass(frozen=True, order=True)
class PortMapping:
    """One published port, ranges already expanded: host_ip None means every host address."""

    protocol: str
    host_port: int
    container_port: int
    host_ip: IP | None = None

    def __str__(self) -> str:
        host = (
            ""
            if self.host_ip is None
            else f"[{self.host_ip}]:"
            if self.host_ip.version == 6
            else f"{self.host_ip}:"
        )
        return f"{host}{self.host_port}:{self.container_port}/{self.protocol}"


_PORT_RE = re.compile(
    r"^(?:(?:(?P<ip>\d{1,3}(?:\.\d{1,3}){3})|\[(?P<ip6>[0-9A-Fa-f:.]+)\]):)?"
    r"(?P<h1>\d+)(?:-(?P<h2>\d+))?:(?P<c1>\d+)(?:-(?P<c2>\d+))?"
    r"(?:/(?P<proto>tcp|udp|sctp))?\Z",
    re.ASCII,  # \d would otherwise accept other scripts' digits, which int() then parses
)


@functools.lru_cache(maxsize=1 << 14)
def parse_port(text: str) -> tuple[PortMapping, ...]:
    """Docker's -p syntax: [HOST_IP:]HOST_PORT[-END]:CONTAINER_PORT[-END][/PROTO]. Cached: a spec's
    ports are parsed by pydantic, by two whole-spec checks and by the desired state, at every load
    (a daemon's spec edits parse the same ones again); a third of a spec's whole-spec checks."""
    m = _PORT_RE.match(text)
    if not m and text.count(":") > 2 and "[" not in text:
        raise ValueError(
            f"invalid port mapping {text!r}: an IPv6 host address goes in brackets, "
            "[ADDRESS]:HOST_PORT:CONTAINER_PORT"
        )
    if not m:
        raise ValueError(
            f"invalid port mapping {text!r}: expected [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp|sctp]"
            " (a host port is required)"
        )
    host_ip: IP | None = None
    if m["ip"]:
        host_ip = ipaddress.IPv4Address(m["ip"])
    elif m["ip6"]:
        try:
            host_ip = ipaddress.IPv6Address(m["ip6"])
        except ValueError as e:
            raise ValueError(f"invalid port mapping {text!r}: {e}") from None
    if host_ip is not None and host_ip.is_unspecified:
        host_ip = None
    h1, c1 = int(m["h1"]), int(m["c1"])
    h2 = int(m["h2"]) if m["h2"] else h1
    c2 = int(m["c2"]) if m["c2"] else c1
    for p in (h1, h2, c1, c2):
        if not 1 <= p <= 65535:
            raise ValueError(f"invalid port mapping {text!r}: port {p} is not in 1-65535")
    if h2 < h1 or c2 < c1:
        raise ValueError(f"invalid port mapping {text!r}: a range must go upwards")
    if h2 - h1 != c2 - c1:
        raise ValueError(f"invalid port mapping {text!r}: host and container ranges differ in size")
    if h2 - h1 >= MAX_PORT_RANGE:
        raise ValueError(f"invalid port mapping {text!r}: ranges are limited to {MAX_PORT_RANGE} ports")
    proto = m["proto"] or "tcp"
    return tuple(PortMapping(proto, h1 + i, c1 + i, host_ip) for i in range(h2 - h1 + 1))


# Shared (the model is frozen): building one per call dominated IPAM and desired-state time at scale.
_NO_OPTIONS = Attachment()


def _port_is_text(value: object) -> object:
    if isinstance(value, int):
        raise ValueError(
            f"port mapping {value} is a number: quote it "
            "(YAML 1.1 reads an unquoted '8000:50' as a base-60 number)"
        )
    return value


def _port(text: str) -> str:
    parse_port(text)
    return text


def _service_port(text: str) -> str:
    parse_service_port(text)
    return text


# Checked one by one, so that a problem names the mapping's own line.
PortText = Annotated[str, BeforeValidator(_port_is_text), AfterValidator(_port)]


class Container(_Model):
    networks: list[str] | dict[str, Attachment | None] = []
    ports: list[PortText] = []
    netns: str | None = None
    host: str | None = None  # the cluster host it runs on (a key of `hosts`)

    @field_validator("netns")
    @classmethod
    def _netns(cls, v: str | None) -> str | None:
        if v is not None and (not v.startswith("/") or "\0" in v):
            raise ValueError(f"netns must be an absolute path to a network namespace, got {v!r}")
        return v

    def attachments(self) -> dict[str, Attachment]:
        """Networks in declaration order, each with its options (defaults filled in)."""
        if isinstance(self.networks, list):
            return {n: _NO_OPTIONS for n in self.networks}
        return {n: (a or _NO_OPTIONS) for n, a in self.networks.items()}

    def port_mappings(self) -> list[PortMapping]:
        return [pm for text in self.ports for pm in parse_port(text)]


class ClusterHost(_Model):
    address: IP  # the underlay address: this host's VXLAN tunnel endpoint (IPv4 or IPv6)
    # Its WireGuard public key (`reconciler keygen` prints it); needed once an overlay is encrypted.
    public_key: str | None = None

    @field_validator("public_key")
    @classmethod
    def _public_key(cls, v: str | None) -> str | None:
        if v is not None and not valid_public_key(v):
            raise ValueError(f"invalid WireGuard public key {v!r}: expected the base64 of 32 bytes")
        return v

    @field_validator("address", mode="before")
    @classmethod
    def _dotted(cls, v: object) -> object:
        return _dotted_only(v)


class ClusterStore(_Model):
    """`cluster:`: the hosts, their endpoints and the overlay addresses live in an etcd cluster
    (`reconciler/store/`), so the spec names no hosts and each host's spec holds its own containers."""

    store: Literal["etcd"]
    endpoints: Annotated[list[str], Field(min_length=1)]
    prefix: str = "/netreconciler"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    ttl: Annotated[int, Field(ge=2, le=3600)] = 10  # seconds a dead host's endpoints outlive it

    @field_validator("endpoints")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        for url in v:
            if not _ENDPOINT_RE.match(url):
                raise ValueError(f"invalid endpoint {url!r}: expected http(s)://HOST:PORT")
        return v

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v.startswith("/") or v.endswith("/") or "//" in v:
            raise ValueError(f"invalid prefix {v!r}: an absolute key path such as /netreconciler")
        return v

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError(f"must be an absolute path, got {v!r}")
        return v


_ENDPOINT_RE = re.compile(r"^https?://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}\Z", re.ASCII)


@dataclass(frozen=True, order=True)
class ServicePort:
    """A port served on a service's VIP; `published` also answers on every host (routing mesh)."""

    protocol: str
    port: int
    published: int | None = None


_SERVICE_PORT_RE = re.compile(r"^(?:(?P<pub>\d+):)?(?P<port>\d+)(?:/(?P<proto>tcp|udp))?\Z", re.ASCII)


def parse_service_port(text: str) -> ServicePort:
    m = _SERVICE_PORT_RE.match(text)
    if not m:
        raise ValueError(f"invalid service port {text!r}: expected PORT or PUBLISHED:PORT[/tcp|udp]")
    port, pub = int(m["port"]), int(m["pub"]) if m["pub"] else None
    for p in (port, pub):
        if p is not None and not 1 <= p <= 65535:
            raise ValueError(f"invalid service port {text!r}: port {p} is not in 1-65535")
    return ServicePort(m["proto"] or "tcp", port, pub)


class Service(_Model):
    network: str
    backends: list[str]
    ports: list[Annotated[str, AfterValidator(_service_port)]] = []

    def service_ports(self) -> list[ServicePort]:
        return [parse_service_port(text) for text in self.ports]


@dataclass(frozen=True, order=True)
class PolicyPort:
    """A port range a policy allows, as a destination port of the selected containers."""

    protocol: str
    first: int
    last: int

    def __str__(self) -> str:
        span = str(self.first) if self.first == self.last else f"{self.first}-{self.last}"
        return f"{span}/{self.protocol}"


_POLICY_PORT_RE = re.compile(r"^(?P<p1>\d+)(?:-(?P<p2>\d+))?(?:/(?P<proto>tcp|udp|sctp))?\Z", re.ASCII)


def parse_policy_port(text: str) -> PolicyPort:
    """PORT[-END][/tcp|udp|sctp], tcp when no protocol is given (as in `ports` of a container)."""
    m = _POLICY_PORT_RE.match(text)
    if not m:
        raise ValueError(f"invalid policy port {text!r}: expected PORT[-END][/tcp|udp|sctp]")
    first = int(m["p1"])
    last = int(m["p2"]) if m["p2"] else first
    for p in (first, last):
        if not 1 <= p <= 65535:
            raise ValueError(f"invalid policy port {text!r}: port {p} is not in 1-65535")
    if last < first:
        raise ValueError(f"invalid policy port {text!r}: a range must go upwards")
    return PolicyPort(m["proto"] or "tcp", first, last)


def _policy_port_is_text(value: object) -> object:
    if isinstance(value, int):
        raise ValueError(f'policy port {value} is a number: write it as "{value}/tcp"')
    return value


def _policy_port(text: str) -> str:
    parse_policy_port(text)
    return text


class Policy(_Model):
    """Ingress allow-list: the containers (or services' backends) of `to` accept new connections only
    from `from` (containers, services, CIDRs) on `ports` (every port when empty), united with every other
    policy naming them. An empty `from` admits nobody: the policy only isolates."""

    to: list[str]
    from_: list[str] = Field(alias="from")
    ports: list[Annotated[str, BeforeValidator(_policy_port_is_text), AfterValidator(_policy_port)]] = []

    def policy_ports(self) -> list[PolicyPort]:
        return [parse_policy_port(text) for text in self.ports]


class Spec(_Model):
    version: Literal[1]
    name: str | None = None
    cluster: ClusterStore | None = None
    hosts: dict[str, ClusterHost] = {}
    wireguard_port: Annotated[StrictInt, Field(ge=1, le=65535)] = 51820  # of encrypted overlays
    networks: dict[str, Network] = {}
    containers: dict[str, Container] = {}
    services: dict[str, Service] = {}
    policies: dict[str, Policy] = {}

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, v: object) -> object:
        # Checked by hand: Literal[1] also matches True and 1.0, which compare equal to 1.
        if type(v) is not int or v != 1:
            raise ValueError(f"unsupported version {v!r}: this reconciler reads version 1")
        return v

    @field_validator("name")
    @classmethod
    def _scope(cls, v: str | None) -> str | None:
        if v is not None and not SCOPE_RE.match(v):
            raise ValueError(
                f"invalid spec name {v!r}: use 1-16 lowercase letters, digits or '_', starting with a letter"
            )
        return v

    @field_validator("networks", "containers", "hosts", "services", "policies")
    @classmethod
    def _names(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        field = info.field_name or ""
        kind = "policy" if field == "policies" else field[:-1]  # "networks" -> "network"
        for name in v:
            _check_name(name, kind)
        return v


@dataclass(frozen=True)
class Broken:
    """What failed the shape checks and was left out of the semantic ones: `(section, name)` entries,
    or whole sections. A reference to one of them is not a second error, and a check that would need
    it is skipped (its outcome would follow from the first error)."""

    names: frozenset[tuple[str, str]] = frozenset()
    sections: frozenset[str] = frozenset()

    def hides(self, section: str, name: str) -> bool:
        return section in self.sections or (section, name) in self.names

    def named(self, section: str) -> set[str]:
        return {n for s, n in self.names if s == section}


NOTHING_BROKEN = Broken()


def semantic_problems(spec: Spec, broken: Broken = NOTHING_BROKEN) -> list[Problem]:
    """Whole-spec checks, each reported at the field path that is wrong (the drivers' own checks follow:
    `drivers.registry.spec_problems`)."""
    return [*_network_problems(spec), *_container_problems(spec, broken), *_alias_problems(spec)]


def _network_problems(spec: Spec) -> list[Problem]:
    out: list[Problem] = []
    seen: list[tuple[str, Network, Net]] = []
    for name, net in spec.networks.items():
        at = ("networks", name)
        if net.driver not in DRIVERS_SUPPORTED:
            out.append(Problem((*at, "driver"), f"driver {net.driver} is not supported yet"))
        out.extend(_driver_options(name, net))
        out.extend(_ipv6_problems(name, net))
        if net.driver == "macvlan":
            out.extend(_macvlan_problems(spec, name, net))
        for version in (4, 6):
            subnet = _first(net.subnets, version)
            if subnet is None:
                out.extend(_without_subnet(name, net, version))
                continue
            out.extend(_subnet_problems(name, net, subnet, seen))
            seen.append((name, net, subnet))
    return out


def _without_subnet(name: str, net: Network, version: int) -> list[Problem]:
    at = ("networks", name)
    out = []
    for field, values in (("gateway", net.gateways), ("ip_range", net.ip_ranges)):
        value = _first(values, version)
        if value is None:
            continue
        if not net.subnets:
            out.append(Problem((*at, field), f"{field} needs an explicit subnet"))
        else:
            msg = f"{field} {value} is {FAMILY[version]}, but the network has no {FAMILY[version]} subnet"
            out.append(Problem((*at, field), msg))
    return out


def _subnet_problems(
    name: str, net: Network, subnet: Net, seen: list[tuple[str, Network, Net]]
) -> list[Problem]:
    at = ("networks", name)
    out: list[Problem] = []
    if subnet.is_link_local or subnet.is_multicast:
        kind = "link-local" if subnet.is_link_local else "multicast"
        out.append(Problem((*at, "subnet"), f"subnet {subnet} is a {kind} prefix: use a unicast one"))
    if net.driver != "macvlan":
        longest = 30 if subnet.version == 4 else 64
        if subnet.prefixlen > longest:
            why = "" if subnet.version == 4 else f" (IPv6 ones need /{longest} or shorter)"
            article = "an" if net.driver == "overlay" else "a"
            msg = f"subnet {subnet} is too small for {article} {net.driver} network{why}"
            out.append(Problem((*at, "subnet"), msg))
    for other, other_net, other_subnet in seen:
        if other_subnet.version != subnet.version or not subnet.overlaps(other_subnet):
            continue
        # Macvlan networks on different parents are separate L2 segments: the same subnet is fine.
        if not (net.driver == other_net.driver == "macvlan" and net.parent != other_net.parent):
            msg = f"subnet {subnet} overlaps {other_subnet} of network {other}"
            out.append(Problem((*at, "subnet"), msg))
        elif net.host_access and other_net.host_access:
            msg = f"network {other} overlaps and has host_access too"
            msg += ": the host routes an address to one network only"
            out.append(Problem((*at, "host_access"), msg))
    gw = _first(net.gateways, subnet.version)
    # A /32 has no room for a gateway: it is reached on-link, outside the subnet. An IPv6 LAN's router
    # is often known by its link-local address only (the one its router advertisements come from).
    outside_ok = net.driver == "macvlan" and (
        subnet.prefixlen == subnet.max_prefixlen or (gw is not None and gw.version == 6 and gw.is_link_local)
    )
    if gw is not None and not _usable(gw, subnet) and not outside_ok:
        out.append(Problem((*at, "gateway"), f"gateway {gw} is not a usable address of {subnet}"))
    ip_range = _first(net.ip_ranges, subnet.version)
    if ip_range is not None and not ip_range.subnet_of(subnet):
        out.append(Problem((*at, "ip_range"), f"ip_range {ip_range} is not inside subnet {subnet}"))
    return out


def _ipv6_problems(name: str, net: Network) -> list[Problem]:
    """IPv6 where it is not carried yet is refused, named, rather than half configured."""
    at = ("networks", name)
    if "ipv6" in net.model_fields_set and not net.ipv6 and net.subnet6 is not None:
        return [Problem((*at, "ipv6"), f"ipv6: false, but the network's subnets include {net.subnet6}")]
    if not net.has_ipv6:
        return []
    if net.driver not in IPV6_DRIVERS:
        field = "subnet" if net.subnet6 is not None else "ipv6"
        return [Problem((*at, field), f"IPv6 on {net.driver} networks is not supported yet")]
    if net.driver == "macvlan" and net.subnet6 is None and net.ipam != "none":
        msg = "ipv6: true picks a ULA prefix of our own; "
        msg += "a macvlan network needs the IPv6 subnet of its parent's LAN"
        return [Problem((*at, "ipv6"), msg)]
    if net.driver == "overlay" and net.subnet6 is None and net.subnets:
        msg = "an overlay network with ipv6: true needs an IPv6 subnet: every host must agree on it"
        return [Problem((*at, "ipv6"), msg)]
    if net.mtu is not None and net.mtu < IPV6_MIN_MTU:
        msg = f"mtu {net.mtu} is below {IPV6_MIN_MTU}, the least IPv6 works with (the kernel turns it off)"
        return [Problem((*at, "mtu"), msg)]
    return []


def _driver_options(name: str, net: Network) -> list[Problem]:
    out = []
    for option in sorted(net.model_fields_set):
        if option in BRIDGE_ONLY and net.driver != "bridge":
            why = "a macvlan network has no bridge of ours to isolate" if net.driver == "macvlan" else ""
            msg = f"{option} is a bridge network option, not one of driver {net.driver}"
            out.append(Problem(("networks", name, option), f"{msg} ({why})" if why else msg))
        elif option in MACVLAN_ONLY and net.driver != "macvlan":
            msg = f"{option} is a macvlan network option, not one of driver {net.driver}"
            out.append(Problem(("networks", name, option), msg))
    return out


def _macvlan_problems(spec: Spec, name: str, net: Network) -> list[Problem]:
    at = ("networks", name)
    out: list[Problem] = []
    if net.parent is None:
        out.append(Problem(at, "a macvlan network needs `parent`: the host interface its containers join"))
    vlan = net.vlan()
    if vlan is not None and not 1 <= vlan[1] <= 4094:
        out.append(Problem((*at, "parent"), f"VLAN id {vlan[1]} of {net.parent} is not in 1-4094"))
    if net.ipam == "none":
        for field in ("subnet", "gateway", "ip_range"):
            if getattr(net, f"{field}s" if field != "ip_range" else "ip_ranges"):
                msg = f"ipam: none takes no {field} (addresses are set elsewhere)"
                out.append(Problem((*at, field), msg))
        if net.host_access:
            out.append(Problem((*at, "host_access"), "host_access needs IPAM addresses to route to"))
    elif not net.subnets:
        out.append(Problem(at, "a macvlan network needs the subnet of the network its parent is on"))
    if net.host_access and net.mode != "bridge":
        msg = f"host_access needs mode bridge: in mode {net.mode} the host's shim cannot reach the containers"
        out.append(Problem((*at, "host_access"), msg))
    if net.mode == "passthru":
        members = [c for c, ctr in spec.containers.items() if name in ctr.attachments()]
        if len(members) > 1:
            msg = f"mode passthru gives the parent to one container, but {', '.join(members)} use it"
            out.append(Problem((*at, "mode"), msg))
        for other, other_net in spec.networks.items():
            if other != name and other_net.driver == "macvlan" and other_net.parent == net.parent:
                msg = f"mode passthru cannot share parent {net.parent} with network {other}"
                out.append(Problem((*at, "mode"), msg))
    return out


def _usable(addr: IP, subnet: Net) -> bool:
    if subnet.prefixlen >= subnet.max_prefixlen - 1:
        # Point-to-point /31 (RFC 3021) and /127 (RFC 6164), single-address /32 and /128: no reserved ends.
        return addr in subnet
    if subnet.version == 6:  # no broadcast; the subnet-router anycast address (::) is the router's
        return addr in subnet and addr != subnet.network_address
    return addr in subnet and addr not in (subnet.network_address, subnet.broadcast_address)


def _container_problems(spec: Spec, broken: Broken) -> list[Problem]:
    out: list[Problem] = []
    # Per network: two macvlan networks on different parents may hand out the same address.
    taken: dict[tuple[str, IP], str] = {}
    published: dict[tuple[str, int], list[tuple[IP | None, str]]] = {}
    netns_paths: dict[str, str] = {}
    for cname, ctr in spec.containers.items():
        at = ("containers", cname)
        attachments = ctr.attachments()
        for nname, att in attachments.items():
            net = spec.networks.get(nname)
            if net is None:
                if not broken.hides("networks", nname):
                    out.append(Problem((*at, "networks", nname), f"unknown network {nname!r}"))
                continue
            for field, addr in (("ipv4_address", att.ipv4_address), ("ipv6_address", att.ipv6_address)):
                if addr is not None:
                    where = (*at, "networks", nname, field)
                    problem = _static_problem(nname, net, addr, taken.get((nname, addr)))
                    if problem:
                        out.append(Problem(where, problem))
                    else:
                        taken[nname, addr] = cname
        # With an unknown network among them, whether one would do is not known: that error says enough.
        if ctr.ports and all(n in spec.networks for n in attachments):
            nets = [spec.networks[n] for n in attachments]
            out.extend(_ports_need_a_way_out(cname, nets) or _ports_of_a_family(cname, ctr, nets))
        out.extend(_port_clashes(cname, ctr, published))
        if ctr.netns is not None:
            if ctr.netns in netns_paths:
                out.append(
                    Problem(
                        (*at, "netns"), f"namespace {ctr.netns} is already used by {netns_paths[ctr.netns]}"
                    )
                )
            netns_paths[ctr.netns] = cname
    return out


def _static_problem(nname: str, net: Network, addr: IP, holder: str | None) -> str | None:
    family = FAMILY[addr.version]
    subnet = _first(net.subnets, addr.version)
    if net.ipam == "none":
        return f"network {nname} has ipam: none: its addresses are set elsewhere"
    if subnet is None and not net.subnets:
        # Macvlan and overlay networks are refused without a subnet already: no second error.
        if net.driver == "bridge" and (addr.version == 4 or net.ipv6):
            return f"a static address needs network {nname} to declare its subnet"
        if net.driver == "bridge":
            return f"network {nname} has no {family} subnet (set ipv6: true or an IPv6 subnet)"
        return None
    if subnet is None:
        if addr.version == 6 and net.ipv6:
            return f"a static {family} address needs network {nname} to declare its {family} subnet"
        return f"network {nname} has no {family} subnet"
    if not _usable(addr, subnet):
        return f"{addr} is not a usable address of {subnet}"
    if addr == _gateway(net, addr.version):
        return f"{addr} is the gateway of network {nname}"
    if holder is not None:
        return f"{addr} is already assigned to container {holder}"
    return None


def _ports_need_a_way_out(cname: str, nets: list[Network]) -> list[Problem]:
    if any(not n.internal and n.driver != "macvlan" for n in nets):
        return []
    why = "at least one non-internal network"
    if any(n.driver == "macvlan" for n in nets):
        why += " (macvlan networks publish no ports: the container is reached at its own address)"
    return [Problem(("containers", cname, "ports"), f"ports need {why}")]


def _ports_of_a_family(cname: str, ctr: Container, nets: list[Network]) -> list[Problem]:
    """A port on a host address of one family needs the container to have an address of it where
    ports are published (its first non-internal network)."""
    target = next(n for n in nets if not n.internal and n.driver != "macvlan")
    out = []
    for index, text in enumerate(ctr.ports):
        # Most ports bind every host address: only a port on a host address has a family to check.
        versions = sorted({pm.host_ip.version for pm in parse_port(text) if pm.host_ip is not None})
        for version in versions:
            if not (target.has_ipv4 if version == 4 else target.has_ipv6):
                family = FAMILY[version]
                msg = f"a port on an {family} host address, but the container has no {family} address"
                msg += " on the network its ports are published on"
                out.append(Problem(("containers", cname, "ports", index), msg))
    return out


def _alias_problems(spec: Spec) -> list[Problem]:
    """An alias is one more name for its container in the hosts files of its network's members. It must
    not be the name of another container or service those members resolve too: hosts files answer the
    first line, and the alias would shadow the name. Several containers sharing an alias is fine (round
    robin, as in Docker); one attachment listing an alias twice is a slip."""
    nets_of = {c: set(ctr.attachments()) for c, ctr in spec.containers.items()}
    nets_of.update({s: {svc.network} for s, svc in spec.services.items() if s not in nets_of})
    # Per network, every network a member of it resolves names on.
    seen_from: dict[str, set[str]] = {}
    for nets in nets_of.values():
        for n in nets:
            seen_from.setdefault(n, set()).update(nets)
    out: list[Problem] = []
    for cname, ctr in spec.containers.items():
        for nname, att in ctr.attachments().items():
            listed: dict[str, int] = {}
            for index, alias in enumerate(att.aliases):
                at = ("containers", cname, "networks", nname, "aliases", index)
                if alias in listed:
                    msg = f"alias {alias!r} is listed twice (first as aliases.{listed[alias]})"
                    out.append(Problem(at, msg))
                    continue
                listed[alias] = index
                if alias != cname and nets_of.get(alias, set()) & seen_from.get(nname, set()):
                    out.append(Problem(at, _shadowing(spec, alias, nname)))
    return out


def _shadowing(spec: Spec, alias: str, network: str) -> str:
    what = "container" if alias in spec.containers else "service"
    return (
        f"alias {alias!r} is the name of {what} {alias}, which members of network {network} resolve: "
        "the alias would shadow it (use another alias)"
    )


def _port_clashes(
    cname: str, ctr: Container, published: dict[tuple[str, int], list[tuple[IP | None, str]]]
) -> list[Problem]:
    out: list[Problem] = []
    for index, text in enumerate(ctr.ports):
        for pm in parse_port(text):
            bound = published.setdefault((pm.protocol, pm.host_port), [])
            # A wildcard binding clashes with every specific binding of the same port, and vice versa.
            clash = next((o for ip, o in bound if ip is None or pm.host_ip is None or ip == pm.host_ip), None)
            if clash is not None:
                msg = f"host port {pm.host_port}/{pm.protocol} is already published by {clash}"
                out.append(Problem(("containers", cname, "ports", index), msg))
                break
            bound.append((pm.host_ip, cname))
    return out


def _gateway(net: Network, version: int) -> IP | None:
    given = _first(net.gateways, version)
    subnet = _first(net.subnets, version)
    if given is not None:
        return given  # type: ignore[no-any-return]
    if subnet is None or net.driver == "macvlan":  # a macvlan network has a gateway only when given
        return None
    return subnet.network_address + 1  # type: ignore[no-any-return]
