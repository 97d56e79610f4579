"""Raw rtnetlink dumps beside iproute2's view of the same objects, and the check that the parser
reads them as iproute2 does. Run as a script INSIDE a sandbox (tests/sandbox.py), it builds links of
every kind the observation reads and prints the capture as JSON: tests/rtnl_captured.json is its
output, which tests/test_rtnl.py checks; tests/integration/test_observe_kernel.py captures afresh.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from typing import Any

from reconciler import rtnl
from reconciler.rtnl import Msg, answer_part, parse_addresses, parse_links, parse_routes

# Names and aliases of several lengths: their NUL and padding vary (1 to 4 bytes), and so do the
# layouts of the link messages.
SETUP = [
    "ip link set lo up",
    "ip link add br0 type bridge",
    "ip link set br0 alias netreconciler:cap:network:front up",
    "ip addr add 10.77.0.1/24 dev br0",
    "ip addr add fd00:77::1/64 dev br0",
    "ip link add vh0 mtu 1400 type veth peer name vethpeer0 mtu 1400",
    "ip link set vh0 master br0 alias netreconciler:cap:veth:web/front up",
    "ip link add vh12 type veth peer name vethpeer12",
    "ip link set vh12 master br0 alias netreconciler:cap:veth:db12/front up",
    "ip link add lan0 type veth peer name lan0p",
    "ip link set lan0 up",
    "ip addr add 192.168.77.2/24 dev lan0",
    "ip link add link lan0 name mvb type macvlan mode bridge",
    "ip link add link lan0 name mvpriv type macvlan mode private",
    "ip link set mvb alias netreconciler:cap:shim:lan up",
    "ip link add vx42 type vxlan id 42 dstport 4789 local 10.77.0.1 nolearning",
    "ip tuntap add tap0 mode tap",
    "ip route add default via 10.77.0.254 dev br0 proto 211",
    "ip -6 route add default via fd00:77::fe dev br0",
    "ip route add 10.99.0.0/16 dev br0 proto static",
    "ip route add 10.98.0.0/16 via 192.168.77.1 dev lan0 onlink",
]

# What the observation asks for: every link (without statistics), both families' addresses in one
# dump, and the main table's routes per family.
REQUESTS = {
    "links": (rtnl.RTM_GETLINK, rtnl.ifinfo() + rtnl.attr(rtnl.IFLA_EXT_MASK, rtnl.RTEXT_FILTER_SKIP_STATS)),
    "addresses": (rtnl.RTM_GETADDR, rtnl._IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0)),
    "routes4": (rtnl.RTM_GETROUTE, rtnl._RTMSG.pack(socket.AF_INET, 0, 0, 0, rtnl.RT_TABLE_MAIN, 0, 0, 0, 0)),
    "routes6": (
        rtnl.RTM_GETROUTE,
        rtnl._RTMSG.pack(socket.AF_INET6, 0, 0, 0, rtnl.RT_TABLE_MAIN, 0, 0, 0, 0),
    ),
}
IPROUTE2 = {
    "links": "ip -j -d link show",
    "addresses": "ip -j addr show",
    "routes4": "ip -j -d -N -4 route show table main",
    "routes6": "ip -j -d -N -6 route show table main",
}


def datagrams(sock: rtnl.Rtnl, kind: int, body: bytes) -> tuple[int, list[str]]:
    """The request's sequence number and the datagrams answering it, as hex."""
    seq = sock._send(kind, rtnl.NLM_F_DUMP, body)
    out: list[str] = []
    while True:
        data = sock.sock.recv(1 << 16)
        out.append(data.hex())
        if rtnl.answer_part(data, seq, []) is not None:
            return seq, out


def capture() -> dict[str, object]:
    for command in SETUP:
        subprocess.run(command.split(), check=True)
    dumps = {}
    with rtnl.Rtnl() as sock:
        for name, (kind, body) in REQUESTS.items():
            seq, grams = datagrams(sock, kind, body)
            dumps[name] = {"seq": seq, "datagrams": grams}
    views = {
        name: json.loads(subprocess.run(c.split(), check=True, capture_output=True).stdout)
        for name, c in IPROUTE2.items()
    }
    return {"dumps": dumps, "iproute2": views}


def messages(*datagrams: bytes, seq: int = 1) -> list[Msg]:
    out: list[Msg] = []
    for data in datagrams:
        if answer_part(data, seq, out) is not None:
            return out
    raise AssertionError("the answer did not end")


def captured_messages(capture: dict[str, Any], name: str) -> list[Msg]:
    dump = capture["dumps"][name]
    return messages(*(bytes.fromhex(g) for g in dump["datagrams"]), seq=dump["seq"])


def check_capture(capture: dict[str, Any]) -> None:
    """The captured dumps, parsed, say what iproute2 said of the same kernel objects."""
    views = capture["iproute2"]
    links = parse_links(captured_messages(capture, "links"))
    names = {msg.index: msg.ifname for msg in links}
    seen = []
    for view in views["links"]:
        info = view.get("linkinfo", {})
        seen.append(
            (
                view["ifindex"],
                view["ifname"],
                view["mtu"],
                view.get("address", ""),
                view.get("ifalias"),
                view.get("master"),
                view.get("link"),
                info.get("info_kind"),
                info.get("info_data", {}).get("mode") if info.get("info_kind") == "macvlan" else None,
                "UP" in view["flags"],
            )
        )
    parsed = [
        (
            m.index,
            m.ifname,
            m.mtu,
            m.mac,
            m.alias,
            names.get(m.master) if m.master else None,
            names.get(m.link) if m.link and m.link != m.index else None,
            m.kind,
            m.macvlan_mode,
            bool(m.flags & rtnl.IFF_UP),
        )
        for m in links
    ]
    assert parsed == seen

    addresses = parse_addresses(captured_messages(capture, "addresses"))
    by_name = {v["ifname"]: v["ifindex"] for v in views["links"]}
    listed = sorted(
        (by_name[v["ifname"]], a["local"], a["prefixlen"])
        for v in views["addresses"]
        for a in v["addr_info"]
        if not a["local"].startswith("fe80:")
    )
    assert sorted((a.index, a.address, a.prefixlen) for a in addresses) == listed

    for name, family in (("routes4", socket.AF_INET), ("routes6", socket.AF_INET6)):
        routes = parse_routes(captured_messages(capture, name), family)
        listed_routes = []
        host_length = "32" if family == socket.AF_INET else "128"
        for v in views[name]:
            dst, _, length = v["dst"].partition("/")
            listed_routes.append(
                (
                    None if dst == "default" else dst,
                    0 if dst == "default" else int(length or host_length),
                    v.get("gateway"),
                    by_name[v["dev"]],
                    int(v["protocol"]),
                    "onlink" in v["flags"],
                )
            )
        got = [
            (r.dst, r.dst_len, r.gateway, r.oif, r.proto, bool(r.flags & rtnl.RTNH_F_ONLINK)) for r in routes
        ]
        assert sorted(got, key=repr) == sorted(listed_routes, key=repr)
        defaults = parse_routes(captured_messages(capture, name), family, defaults=True)
        assert [r.gateway for r in defaults] == [
            v.get("gateway") for v in views[name] if v["dst"] == "default"
        ]


if __name__ == "__main__":
    json.dump(capture(), sys.stdout, indent=1)
