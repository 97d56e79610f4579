"""The rtnetlink parser (reconciler/rtnl.py): real dumps captured from the kernel (tests/rtnl_capture.py)
against iproute2's view of the same objects, the compiled link layouts against the attribute walk, and
the framing's edge cases (answers over several datagrams, other requests' messages, errors, a dump the
kernel marks inconsistent, malformed attributes)."""

from __future__ import annotations

import errno
import json
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rtnl_capture import captured_messages, check_capture, messages

from reconciler import rtnl
from reconciler.rtnl import (
    IFLA_ADDRESS,
    IFLA_IFALIAS,
    IFLA_IFNAME,
    IFLA_INFO_DATA,
    IFLA_INFO_KIND,
    IFLA_LINK,
    IFLA_LINKINFO,
    IFLA_MASTER,
    IFLA_MTU,
    NLM_F_DUMP_INTR,
    NLM_F_MULTI,
    NLMSG_DONE,
    NLMSG_ERROR,
    RTM_NEWLINK,
    Layouts,
    LinkMsg,
    Msg,
    NetlinkError,
    Rtnl,
    answer_part,
    attr,
    parse_links,
)

CAPTURED = Path(__file__).with_name("rtnl_captured.json")
NLA_F_NESTED = 0x8000


def nlmsg(kind: int, seq: int, payload: bytes, flags: int = NLM_F_MULTI) -> bytes:
    size = 16 + len(payload)
    return struct.pack("=IHHII", size, kind, flags, seq, 0) + payload + b"\0" * (-size & 3)


def done(seq: int, code: int = 0, flags: int = NLM_F_MULTI) -> bytes:
    return nlmsg(NLMSG_DONE, seq, struct.pack("=i", code), flags)


def error(seq: int, code: int) -> bytes:
    return nlmsg(NLMSG_ERROR, seq, struct.pack("=i", code) + b"\0" * 16, 0)


def link(index: int, *attributes: bytes, flags: int = 0) -> bytes:
    return rtnl.ifinfo(index)[:8] + struct.pack("=II", flags, 0) + b"".join(attributes)


def test_captured_dumps_parse_as_iproute2_lists_them() -> None:
    capture = json.loads(CAPTURED.read_text())
    # The capture has what the parser must get right: a dump over several datagrams, strings of every
    # padding, macvlans, a bridge port's nested slave data, an IPv6 link-local address to drop.
    assert len(capture["dumps"]["links"]["datagrams"]) > 2
    check_capture(capture)


def test_compiled_layouts_read_what_the_walk_reads() -> None:
    capture = json.loads(CAPTURED.read_text())
    msgs = captured_messages(capture, "links")
    walked = [rtnl._link(data, start, end) for _, _, data, start, end in msgs]
    layouts = Layouts(rtnl._LINK_ATTRS)

    def read_all() -> list[tuple[tuple[int, ...], tuple[bytes, ...]]]:
        return [
            (tuple(kinds), tuple(values))
            for kinds, values in (layouts.read(data, start + 16, end) for _, _, data, start, end in msgs)
        ]

    reads = [read_all() for _ in range(3)]
    # Seen once: walked; twice: compiled (a layout per size at least); then matched, compiling no more.
    compiled = layouts.count
    assert compiled >= len({end - start for _, _, _, start, end in msgs})
    assert read_all() == reads[0] and layouts.count == compiled
    assert reads[0] == reads[1] == reads[2]
    kinds = [dict(zip(k, v, strict=True)) for k, v in reads[2]]
    assert [k[IFLA_IFNAME].rstrip(b"\0").decode() for k in kinds] == [m.ifname for m in walked]


def test_a_layout_of_the_same_size_but_other_attributes_is_walked() -> None:
    layouts = Layouts(rtnl._LINK_ATTRS)
    first = link(1, attr(IFLA_IFNAME, "abc"), attr(IFLA_MTU, 1500), attr(30, 7))
    other = link(2, attr(IFLA_IFNAME, "abc"), attr(30, 7), attr(IFLA_MTU, 9000))
    assert len(first) == len(other)
    for _ in range(2):
        layouts.read(first, 16, len(first))
    assert layouts.count == 1
    for _ in range(2):  # walked, as `first`'s layout does not match it; then its own compiled layout
        kinds, values = layouts.read(other, 16, len(other))
        assert dict(zip(kinds, values, strict=True))[IFLA_MTU] == struct.pack("=I", 9000)
    assert layouts.count == 2
    kinds, values = layouts.read(first, 16, len(first))
    assert dict(zip(kinds, values, strict=True))[IFLA_MTU] == struct.pack("=I", 1500)


def test_nested_linkinfo_with_the_nested_flag_and_padded_strings() -> None:
    info = attr(IFLA_INFO_KIND, "macvlan") + attr(IFLA_INFO_DATA, attr(rtnl.IFLA_MACVLAN_MODE, 4))
    nested = struct.pack("=HH", 4 + len(info), IFLA_LINKINFO | NLA_F_NESTED) + info
    payload = link(
        7,
        attr(IFLA_IFNAME, "mv12"),  # five bytes with the NUL: three of padding
        attr(IFLA_MTU, 1450),
        attr(IFLA_LINK, 3),
        attr(IFLA_MASTER, 5),
        attr(IFLA_ADDRESS, bytes.fromhex("0200c0a80001")),
        nested,
        attr(IFLA_IFALIAS, "netreconciler:s:shim:lan"),
        flags=rtnl.IFF_UP,
    )
    msg = parse_links(messages(nlmsg(RTM_NEWLINK, 1, payload) + done(1)))[0]
    assert msg == LinkMsg(
        7,
        rtnl.IFF_UP,
        "mv12",
        "netreconciler:s:shim:lan",
        "macvlan",
        5,
        1450,
        3,
        "02:00:c0:a8:00:01",
        attr(rtnl.IFLA_MACVLAN_MODE, 4),
    )
    assert msg.macvlan_mode == "bridge"


def test_a_malformed_attribute_ends_the_walk_and_is_not_learned() -> None:
    layouts = Layouts(rtnl._LINK_ATTRS)
    good = attr(IFLA_IFNAME, "eth0")
    overrun = struct.pack("=HH", 200, IFLA_MTU) + b"\0" * 4
    payload = link(3, good, overrun)
    for _ in range(3):
        kinds, _ = layouts.read(payload, 16, len(payload))
        assert list(kinds) == [IFLA_IFNAME]
    assert layouts.count == 0
    short = link(4, struct.pack("=HH", 2, IFLA_MTU))
    assert parse_links(messages(nlmsg(RTM_NEWLINK, 1, short) + done(1)))[0].mtu == 0


def test_an_answer_over_several_datagrams_with_other_requests_between() -> None:
    one, two, three = (nlmsg(RTM_NEWLINK, 5, link(i, attr(IFLA_IFNAME, f"if{i}"))) for i in (1, 2, 3))
    stale = nlmsg(RTM_NEWLINK, 4, link(9, attr(IFLA_IFNAME, "old")))
    out: list[Msg] = []
    assert answer_part(one + stale, 5, out) is None
    assert answer_part(two + three + done(5, flags=NLM_F_MULTI | NLM_F_DUMP_INTR), 5, out) == (
        NLM_F_MULTI | NLM_F_DUMP_INTR
    )
    assert [m.ifname for m in parse_links(out)] == ["if1", "if2", "if3"]
    # What follows the DONE in its datagram is no part of the answer.
    out = []
    assert answer_part(one + done(5) + two, 5, out) == NLM_F_MULTI
    assert len(out) == 1


def test_errors_raise_and_an_ack_ends_the_answer() -> None:
    with pytest.raises(NetlinkError) as refused:
        answer_part(error(3, -errno.EEXIST), 3, [])
    assert refused.value.code == errno.EEXIST
    assert answer_part(error(3, 0), 3, []) == 0
    with pytest.raises(NetlinkError) as failed:
        answer_part(nlmsg(RTM_NEWLINK, 3, link(1)) + done(3, -errno.EMSGSIZE), 3, [])
    assert failed.value.code == errno.EMSGSIZE
    # An error answering another request is not ours.
    assert answer_part(error(2, -errno.EPERM), 3, []) is None
    # A header whose size overruns the datagram ends the datagram.
    truncated = struct.pack("=IHHII", 400, RTM_NEWLINK, 0, 3, 0) + b"\0" * 16
    out: list[Msg] = []
    assert answer_part(truncated, 3, out) is None and out == []


class Replies:
    """A socket that answers each request with the next of `answers`, its messages numbered as the
    request was."""

    def __init__(self, answers: list[list[bytes]]) -> None:
        self.answers = answers
        self.pending: list[bytes] = []

    def send(self, data: bytes) -> int:
        seq = struct.unpack_from("=I", data, 8)[0]
        self.pending = [g.replace(b"SEQ!", struct.pack("=I", seq)) for g in self.answers.pop(0)]
        return len(data)

    def recv(self, size: int) -> bytes:
        return self.pending.pop(0)


def numbered(kind: int, payload: bytes, flags: int = NLM_F_MULTI) -> bytes:
    return nlmsg(kind, 0, payload, flags)[:8] + b"SEQ!" + nlmsg(kind, 0, payload, flags)[12:]


def fake(answers: list[list[bytes]]) -> Rtnl:
    sock = Rtnl.__new__(Rtnl)
    sock.sock = Replies(answers)  # type: ignore[assignment]
    sock._seq = 0
    return sock


def test_a_dump_marked_inconsistent_is_read_again() -> None:
    changed = [numbered(RTM_NEWLINK, link(1, attr(IFLA_IFNAME, "a")), NLM_F_MULTI | NLM_F_DUMP_INTR)]
    clean = [numbered(RTM_NEWLINK, link(1, attr(IFLA_IFNAME, "a")) + b""), numbered(NLMSG_DONE, b"\0" * 4)]
    sock = fake([[*changed, numbered(NLMSG_DONE, b"\0" * 4)], clean])
    assert [m.ifname for m in sock.links()] == ["a"]
    # Marked on its DONE only (the kernel marks the message it is writing when it notices).
    late = [numbered(RTM_NEWLINK, link(1)), numbered(NLMSG_DONE, b"\0" * 4, NLM_F_MULTI | NLM_F_DUMP_INTR)]
    sock = fake([late] * rtnl.DUMP_TRIES)
    with pytest.raises(NetlinkError) as gave_up:
        sock.links()
    assert gave_up.value.code == errno.EAGAIN


ATTRIBUTE_TYPES = [
    IFLA_ADDRESS,
    IFLA_IFNAME,
    IFLA_MTU,
    IFLA_LINK,
    IFLA_MASTER,
    IFLA_IFALIAS,
    2,
    6,
    13,
    26,
    30,
]


@st.composite
def link_payloads(draw: st.DrawFn) -> bytes:
    kinds = draw(st.lists(st.sampled_from(ATTRIBUTE_TYPES), max_size=8))
    body = b"".join(attr(k, draw(st.binary(min_size=1, max_size=9))) for k in kinds)
    return link(draw(st.integers(1, 99)), body)


@settings(max_examples=200, deadline=None)
@given(st.lists(link_payloads(), min_size=1, max_size=12))
def test_layouts_never_misread_a_message(payloads: list[bytes]) -> None:
    """Whatever layouts were compiled from earlier messages, each message reads as `attrs` reads it."""
    layouts = Layouts(rtnl._LINK_ATTRS)
    for payload in payloads * 3:
        kinds, values = layouts.read(payload, 16, len(payload))
        expected = rtnl.attrs(payload, 16)
        wanted = [(k, v) for k, v in expected.items() if k in rtnl._LINK_ATTRS]
        got = list(zip(kinds, values, strict=True))
        # A type given twice: `attrs` keeps the last, the walk and the layouts each one in order.
        assert dict(got) == dict(wanted)
