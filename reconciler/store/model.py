"""What the store holds, under `PREFIX/SCOPE/`, and how each value is written (JSON objects).

    hosts/HOST              {"address": VTEP, "public_key": null}            the host's lease
    names/CONTAINER         {"host": HOST}                                    the host's lease
    ipam/NETWORK/ADDRESS    an endpoint (below)                               the host's lease;
                                                                              services: none
    services/NETWORK/NAME   {"address": VIP}: a service's one VIP            none
    networks/NETWORK/HOST   the host's definition of the overlay network      the host's lease

Every key a host writes is attached to its lease (one per host, `cluster.ttl`, kept alive by the
daemon): when the host dies its registration, names, addresses and definitions vanish together. An
address key is created only if absent (`Version(key) == 0`, as flannel's subnet leases), so no
address is ever given twice: the address is the key. A container's name is claimed the same way, so
two hosts cannot run containers of the same name. Service VIPs belong to no host (every host's spec
holds the shared services): their keys have no lease.

A host's registration is a JSON object so that backends can add what other hosts need of it:
`public_key` is the host's WireGuard public key (base64) once its overlay uses WireGuard, null
until then. Readers ignore fields they do not know.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import names
from .client import Entry


@dataclass(frozen=True)
class Keys:
    root: str  # "PREFIX/SCOPE/"

    @classmethod
    def of(cls, prefix: str, scope: str) -> Keys:
        return cls(f"{prefix}/{scope}/")

    def host(self, host: str) -> str:
        return f"{self.root}hosts/{host}"

    def name(self, container: str) -> str:
        return f"{self.root}names/{container}"

    def address(self, network: str, address: str) -> str:
        return f"{self.root}ipam/{network}/{address}"

    def service(self, network: str, service: str) -> str:
        return f"{self.root}services/{network}/{service}"

    def definition(self, network: str, host: str) -> str:
        return f"{self.root}networks/{network}/{host}"

    def split(self, key: str) -> list[str]:
        """A key's parts below the root (["ipam", NETWORK, ADDRESS]), [] for a key not ours."""
        return key[len(self.root) :].split("/") if key.startswith(self.root) else []


@dataclass(frozen=True)
class HostRecord:
    address: str  # the underlay address other hosts send VXLAN to (the VTEP)
    public_key: str | None = None  # WireGuard public key, once the overlay encrypts with it

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> HostRecord:
        data = json.loads(text)
        return cls(str(data["address"]), data.get("public_key"))


@dataclass(frozen=True)
class Endpoint:
    """One address of an overlay network: a container's, a host's node address, or a service VIP."""

    kind: str  # container, node (a host's address on the overlay) or service (a VIP)
    name: str  # the container, host or service
    network: str
    address: str
    host: str = ""  # the host it lives on ("" for a service)
    vtep: str = ""  # that host's underlay address
    mac: str = ""
    aliases: tuple[str, ...] = field(default=())

    def to_json(self) -> str:
        data: dict[str, Any] = asdict(self)
        data["aliases"] = list(self.aliases)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Endpoint:
        return _endpoint(text)

    @classmethod
    def _parse(cls, text: str) -> Endpoint:
        data = json.loads(text)
        return cls(
            str(data["kind"]),
            str(data["name"]),
            str(data["network"]),
            str(data["address"]),
            str(data.get("host", "")),
            str(data.get("vtep", "")),
            str(data.get("mac", "")),
            tuple(str(a) for a in data.get("aliases", [])),
        )

    @classmethod
    def make(
        cls,
        kind: str,
        name: str,
        network: str,
        address: str,
        host: str = "",
        vtep: str = "",
        aliases: tuple[str, ...] = (),
    ) -> Endpoint:
        # The MAC follows from the address (Docker's scheme): other hosts' FDB entries need it.
        mac = names.container_mac(ipaddress.IPv4Address(address))
        return cls(kind, name, network, address, host, vtep, mac, aliases)

    def same_owner(self, other: Endpoint) -> bool:
        return (self.kind, self.name, self.network, self.host) == (
            other.kind,
            other.name,
            other.network,
            other.host,
        )


@functools.lru_cache(maxsize=1 << 16)
def _endpoint(text: str) -> Endpoint:
    """Parsed once per value: every reconcile reads every endpoint of the view (10,000 at scale), and
    a value only changes with its key's revision. Endpoints are immutable, so sharing them is safe."""
    return Endpoint._parse(text)


@dataclass
class View:
    """The store's keys under one root as last read (a listing, then the watch's events)."""

    keys: Keys
    entries: dict[str, Entry] = field(default_factory=dict)
    revision: int = 0

    def hosts(self) -> dict[str, HostRecord]:
        out = {}
        for key, e in self.entries.items():
            parts = self.keys.split(key)
            if len(parts) == 2 and parts[0] == "hosts":
                out[parts[1]] = HostRecord.from_json(e.value)
        return out

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint.from_json(e.value)
            for key, e in self.entries.items()
            if self.keys.split(key)[:1] == ["ipam"]
        ]

    def definitions(self, network: str) -> list[tuple[int, str, dict[str, Any]]]:
        """(create revision, host, definition) of every host's definition of `network`, oldest first."""
        out = []
        for key, e in self.entries.items():
            parts = self.keys.split(key)
            if len(parts) == 3 and parts[0] == "networks" and parts[1] == network:
                out.append((e.create_revision, parts[2], json.loads(e.value)))
        return sorted(out, key=lambda d: d[0])
