"""Router advertisements from a container (CVE-2020-13401 in Docker): on an IPv4-only bridge network a
container that sends one must not give the others an IPv6 address or default route. A namespace of
the test's own on the same bridge, with the kernel's defaults, is the control: it takes the prefix.
"""

from __future__ import annotations

import time

import pytest
from sandbox import Host

pytestmark = pytest.mark.integration

ROGUE_PREFIX = "2001:db8:bad:"
SETTLE = 30.0  # seconds for the control to show the advertised prefix

# An RA for 2001:db8:bad::/64 (on-link, autonomous) with a router lifetime, three times to ff02::1
# from the sender's link-local address with hop limit 255 (the kernel adds the ICMPv6 checksum).
SEND_RA = r"""
import socket, struct
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
index = socket.if_nametoindex("eth0")
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)
prefix = struct.pack("!BBBBIII", 3, 4, 64, 0xC0, 86400, 14400, 0)
prefix += socket.inet_pton(socket.AF_INET6, "2001:db8:bad::")
for _ in range(3):
    s.sendto(ra + prefix, ("ff02::1", 0, 0, index))
"""


def global6(host: Host, netns: str) -> str:
    return host.run(["ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"], netns=netns).stdout


def test_router_advertisements_from_a_container_change_no_other_container(host: Host) -> None:
    spec = {
        "version": 1,
        "networks": {"lan": {"subnet": "172.28.7.0/24"}},
        "containers": {"rogue": {"networks": ["lan"]}, "victim": {"networks": ["lan"]}},
    }
    proc = host.reconciler("apply", str(host.write_spec(spec)))
    assert proc.returncode == 0, proc.stderr
    bridge = next(name for name in host.links() if name.startswith("nr-"))
    host.run(["ip", "netns", "add", "control"])
    host.run(["ip", "link", "add", "ctl0", "type", "veth", "peer", "name", "eth0", "netns", "control"])
    host.run(["ip", "link", "set", "ctl0", "master", bridge, "up"])
    host.run(["ip", "link", "set", "eth0", "up"], netns="control")

    deadline = time.monotonic() + SETTLE
    while ROGUE_PREFIX not in global6(host, "control"):
        assert time.monotonic() < deadline, "the control never took the advertised prefix: no RA arrived"
        # Not checked: a sender whose link-local address is still tentative cannot send yet.
        host.run(["python3", "-c", SEND_RA], netns="rogue", check=False)
        time.sleep(0.2)
    assert "default via fe80::" in host.run(["ip", "-6", "route"], netns="control").stdout
    assert global6(host, "victim") == ""
    assert host.run(["ip", "-6", "route", "show", "default"], netns="victim").stdout == ""
