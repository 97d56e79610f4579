"""The bridge driver's hooks. Its modules are imported when a hook runs: `validate` loads the
registry for the spec checks only, and the model's dataclasses alone cost it 15 ms."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

from ..driver import Attachment, Base, Executor, NetworkPart

if TYPE_CHECKING:
    from ...diff import Action
    from ...model import Iface, Resource
    from ...spec import IP, Net, Network


class BridgeDriver(Base):
    name = "bridge"
    kinds: ClassVar[tuple[str, ...]] = ("bridge",)
    per_container = True
    compiled_alone = True  # desired.py reads the spec and the record, of the host nothing

    def gateway(self, net: Network, subnet: Net) -> IP:
        from .desired import gateway

        return gateway(net, subnet)

    def network(self, part: NetworkPart) -> list[Resource]:
        from .desired import bridge

        return bridge(part)

    def attachment(self, att: Attachment) -> Iface:
        from .desired import veth

        return veth(att)

    def executors(self) -> Mapping[str, Executor]:
        from . import apply

        return {"bridge": apply.execute}

    def after_firewall(self, actions: list[Action]) -> None:
        from .apply import set_route_localnet

        set_route_localnet(actions)
