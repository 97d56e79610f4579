"""Kernel objects of an overlay network on one host, in the shared state model.

Per network: a VXLAN device (a port of the network's bridge). Per remote endpoint: a static FDB entry
(its MAC -> its host's VTEP) and a permanent neighbour entry (its IP -> MAC), which the VXLAN device
uses to answer ARP itself (proxy mode), so nothing is ever flooded across the underlay.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...model import Follows, Resource


@dataclass(frozen=True)
class Vxlan(Resource):
    kind = "vxlan"
    # Changing any of these needs a new device; its FDB and neighbour entries go with the old one.
    immutable = ("ifname", "vni", "local", "port", "learning", "proxy")
    follows = (Follows("bridge", ("network",), "change", "bridge"),)  # a port of the network's bridge
    network: str
    ifname: str
    vni: int
    local: str  # this host's VTEP address ("" when the spec declares no hosts)
    port: int
    bridge: str
    mtu: int | None = None
    learning: bool = False
    proxy: bool = True
    up: bool = True

    @property
    def id(self) -> str:
        return self.network


@dataclass(frozen=True)
class Fdb(Resource):
    """A remote endpoint's MAC, reached through the tunnel to its host's VTEP."""

    kind = "fdb"
    follows = (Follows("vxlan", ("network",), "create"),)  # the device takes its entries with it
    network: str
    dev: str
    mac: str
    dst: str

    @property
    def id(self) -> str:
        return f"{self.network}/{self.mac}"


@dataclass(frozen=True)
class Neigh(Resource):
    """A remote endpoint's IP -> MAC, on the VXLAN device (which answers ARP from it)."""

    kind = "neigh"
    follows = (Follows("vxlan", ("network",), "create"),)
    network: str
    dev: str
    ip: str
    mac: str

    @property
    def id(self) -> str:
        return f"{self.network}/{self.ip}"
