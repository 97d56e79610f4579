"""The bridge driver's hooks. The executor is imported when it runs: `validate` loads the registry
for the spec checks only."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..driver import Attachment, Base, Executor, NetworkPart
from . import desired

if TYPE_CHECKING:
    from ...model import Iface, Resource
    from ...spec import Network


class BridgeDriver(Base):
    name = "bridge"
    per_container = True

    def gateway(self, net: Network, subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
        return desired.gateway(net, subnet)

    def network(self, part: NetworkPart) -> list[Resource]:
        return desired.bridge(part)

    def attachment(self, att: Attachment) -> Iface:
        return desired.veth(att)

    def executors(self) -> Mapping[str, Executor]:
        from . import apply

        return {"bridge": apply.execute}
