"""The bridge driver's hooks: its gateway choice, its bridge and veth objects."""

from __future__ import annotations

import ipaddress

from reconciler.drivers.driver import Attachment, NetworkPart
from reconciler.drivers.registry import DRIVERS
from reconciler.endpoints import Endpoint
from reconciler.model import Bridge, Iface
from reconciler.spec import Network
from reconciler.statedir import NetworkRecord, ScopeRecord

BRIDGE = DRIVERS["bridge"]
SUBNET = ipaddress.IPv4Network("10.1.0.0/24")


def test_gateway_is_the_first_address_unless_given() -> None:
    assert BRIDGE.gateway(Network(), SUBNET) == ipaddress.IPv4Address("10.1.0.1")
    given = Network.model_validate({"subnet": "10.1.0.0/24", "gateway": "10.1.0.254"})
    assert BRIDGE.gateway(given, SUBNET) == ipaddress.IPv4Address("10.1.0.254")


def test_network_is_one_bridge_holding_the_gateway() -> None:
    record = ScopeRecord({"front": NetworkRecord("10.1.0.0/24", {})})
    net = Network.model_validate({"mtu": 1400})
    part = NetworkPart("default", "front", net, record, [], frozenset())
    assert BRIDGE.network(part) == [Bridge("front", "nr-front", "10.1.0.1/24", 1400)]


def test_attachment_is_a_veth_into_the_networks_bridge() -> None:
    ep = Endpoint("web", "front", ipaddress.IPv4Address("10.1.0.2"), ())
    att = Attachment("default", Network(), ep, "/run/netns/web", "eth0", "10.1.0.2/24", "02:42:0a:01:00:02")
    iface = BRIDGE.attachment(att)
    assert isinstance(iface, Iface)
    assert (iface.bridge, iface.parent, iface.address) == ("nr-front", None, "10.1.0.2/24")
    assert iface.host_ifname.startswith("nrv") and len(iface.host_ifname) <= 15


def test_a_bridge_network_routes_through_the_host_and_changes_per_container() -> None:
    assert BRIDGE.routed and BRIDGE.per_container and BRIDGE.child_kind is None
    assert set(BRIDGE.executors()) == {"bridge"}
