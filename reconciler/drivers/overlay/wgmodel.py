"""The WireGuard device of encrypted overlays, in the shared state model.

One device per host and scope, its peers a field of it: a change of peers (a host added, a key
rotated) is one action, carried out in one round trip to the device (`wgdevice.configure`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from ...model import Resource


class WgPeer(NamedTuple):
    """Another host: its public key, where it listens (underlay address:port) and its tunnel address.
    (A tuple: plans print and serialize it as one.)"""

    public_key: str
    endpoint: str
    allowed_ip: str  # its tunnel address/32


@dataclass(frozen=True)
class Wireguard(Resource):
    kind = "wireguard"
    # A new tunnel address means a new device (its peers are configured again with it).
    immutable = ("ifname", "address")
    ifname: str
    port: int
    public_key: str  # this host's: the private key is only ever in the key file and the device
    address: str  # this host's tunnel address/prefix (the prefix's route leads into the tunnel)
    peers: tuple[WgPeer, ...]  # sorted
    mtu: int | None = None
    up: bool = True
    # Where the executor reads the private key from: how to get there, not a property of the device.
    key_file: str | None = None

    @property
    def id(self) -> str:
        return self.ifname

    def differences(self, observed: Resource) -> list[str]:
        return [f for f in super().differences(observed) if f != "key_file"]

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["peers"] = [p._asdict() for p in self.peers]
        return out
