"""Listed sets and maps come with protocols as numbers (libnftables' lookup per element is slow) and
are named back as libnftables would print them, in every shape an element takes."""

from __future__ import annotations

from typing import Any

from reconciler.nft import _name_protocols


def named(body: dict[str, Any]) -> list[Any]:
    _name_protocols(body)
    elements: list[Any] = body["elem"]
    return elements


def test_concatenated_map_keys_name_their_protocol_field() -> None:
    body = {
        "type": ["inet_proto", "inet_service"],
        "map": "ipv4_addr",
        "elem": [[{"concat": [6, 80]}, "10.0.0.2"]],
    }
    assert named(body) == [[{"concat": ["tcp", 80]}, "10.0.0.2"]]
    host = {"type": ["ipv4_addr", "inet_proto", "inet_service"], "map": "inet_service"}
    assert named({**host, "elem": [[{"concat": ["10.0.0.1", 17, 53]}, 53]]}) == [
        [{"concat": ["10.0.0.1", "udp", 53]}, 53]
    ]


def test_sets_ranges_wrapped_elements_and_unknown_numbers() -> None:
    assert named({"type": "inet_proto", "elem": [6, 17, 253]}) == ["tcp", "udp", 253]
    policy = {"type": ["ipv4_addr", "ipv4_addr", "inet_proto", "inet_service"], "flags": ["interval"]}
    ranged = {"concat": ["10.0.0.2", {"prefix": {"addr": "10.0.0.0", "len": 24}}, 6, {"range": [80, 90]}]}
    assert named({**policy, "elem": [ranged]}) == [
        {"concat": ["10.0.0.2", {"prefix": {"addr": "10.0.0.0", "len": 24}}, "tcp", {"range": [80, 90]}]}
    ]
    wrapped = {"elem": {"val": {"concat": [6, 80]}, "comment": "x"}}
    assert named({"type": ["inet_proto", "inet_service"], "elem": [wrapped]}) == [
        {"elem": {"val": {"concat": ["tcp", 80]}, "comment": "x"}}
    ]
    assert named({"type": "inet_proto", "elem": [{"range": [6, 17]}]}) == [{"range": ["tcp", "udp"]}]


def test_sets_without_protocols_are_left_as_listed() -> None:
    body = {"type": ["ifname", "ifname"], "elem": [{"concat": ["nr-a", "nr-a"]}]}
    assert named(body) == [{"concat": ["nr-a", "nr-a"]}]
