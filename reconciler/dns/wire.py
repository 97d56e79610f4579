"""DNS messages (RFC 1035), read strictly: every length is checked against the buffer, a name is at
most 255 bytes, and a compression pointer must point before the label it replaces (so it can never
loop). Only what the resolver and its tests need: questions, A/AAAA/PTR answers, headers."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

A, PTR, AAAA = 1, 12, 28
IN = 1
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
QR, AA, TC, RD, RA = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080
HEADER = struct.Struct("!HHHHHH")
MAX_NAME = 255
UDP_LIMIT = 512  # without EDNS, a UDP answer is at most this long (longer ones set TC)


class Malformed(ValueError):
    """A message that breaks RFC 1035's rules (truncated, a bad label, a compression loop)."""


@dataclass(frozen=True)
class Record:
    name: str
    type: int
    ttl: int
    data: bytes


@dataclass(frozen=True)
class Message:
    id: int
    flags: int
    questions: list[tuple[str, int, int]]
    answers: list[Record]

    @property
    def rcode(self) -> int:
        return self.flags & 0xF


def encode_name(name: str) -> bytes:
    """`web` or `web.` -> b"\\x03web\\x00"; raises Malformed for an empty or overlong label."""
    out = bytearray()
    for label in name.rstrip(".").split(".") if name.strip(".") else []:
        raw = label.encode()
        if not 0 < len(raw) < 64:
            raise Malformed(f"bad label in {name!r}")
        out += bytes([len(raw)]) + raw
    out += b"\0"
    if len(out) > MAX_NAME:
        raise Malformed(f"name too long: {name!r}")
    return bytes(out)


def read_name(data: bytes, offset: int) -> tuple[str, int]:
    """The name at `offset` and the offset after it (after its first pointer, if compressed)."""
    labels: list[str] = []
    end = -1
    length = 0
    floor = offset  # a pointer must go strictly below every label read so far: no loops
    while True:
        if offset >= len(data):
            raise Malformed("name runs past the message")
        size = data[offset]
        if size & 0xC0 == 0xC0:
            if offset + 1 >= len(data):
                raise Malformed("truncated compression pointer")
            target = (size & 0x3F) << 8 | data[offset + 1]
            if target >= floor:
                raise Malformed("compression pointer does not point backwards")
            if end < 0:
                end = offset + 2
            offset = floor = target
            continue
        if size & 0xC0:
            raise Malformed("reserved label type")
        if size == 0:
            return ".".join(labels), end if end >= 0 else offset + 1
        if offset + 1 + size > len(data):
            raise Malformed("label runs past the message")
        length += size + 1
        if length + 1 > MAX_NAME:
            raise Malformed("name longer than 255 bytes")
        labels.append(data[offset + 1 : offset + 1 + size].decode("latin-1"))
        offset += 1 + size


def parse(data: bytes) -> Message:
    """A whole message: header, questions and answers (authority and additional are skipped whole)."""
    if len(data) < HEADER.size:
        raise Malformed("shorter than a header")
    ident, flags, qd, an, ns, ar = HEADER.unpack_from(data)
    offset = HEADER.size
    questions = []
    for _ in range(qd):
        name, offset = read_name(data, offset)
        if offset + 4 > len(data):
            raise Malformed("truncated question")
        qtype, qclass = struct.unpack_from("!HH", data, offset)
        offset += 4
        questions.append((name, qtype, qclass))
    records = []
    for _ in range(an + ns + ar):
        name, offset = read_name(data, offset)
        if offset + 10 > len(data):
            raise Malformed("truncated record")
        rtype, _, ttl, size = struct.unpack_from("!HHIH", data, offset)
        offset += 10
        if offset + size > len(data):
            raise Malformed("record data runs past the message")
        records.append(Record(name, rtype, ttl, data[offset : offset + size]))
        offset += size
    return Message(ident, flags, questions, records[:an])


def question_end(data: bytes) -> int:
    """For a query: the offset of the root label ending its one question's name, or -1 when the
    message is no query we answer (too short, not one question, a compressed or overlong name). The
    hot path: no allocation, the labels are only walked."""
    size = len(data)
    if size < 17 or data[4] != 0 or data[5] != 1:
        return -1
    i = 12
    while True:
        if i >= size:
            return -1
        label = data[i]
        if label == 0:
            break
        if label > 63 or i - 12 + label > MAX_NAME - 2:
            return -1  # a pointer (nothing to point back to before the question) or too long
        i += label + 1
    return i if i + 5 <= size else -1


def query(name: str, qtype: int, ident: int = 0, rd: bool = True) -> bytes:
    return HEADER.pack(ident, RD if rd else 0, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", qtype, IN)


def rr(rtype: int, ttl: int, rdata: bytes) -> bytes:
    """An answer record whose owner is the question's name (a pointer to offset 12)."""
    return b"\xc0\x0c" + struct.pack("!HHIH", rtype, IN, ttl, len(rdata)) + rdata


def address_rdata(address: str) -> tuple[int, bytes]:
    ip = ipaddress.ip_address(address)
    return (A if ip.version == 4 else AAAA), ip.packed


def reverse_name(address: str) -> str:
    return ipaddress.ip_address(address).reverse_pointer


def address_of(rdata: bytes) -> str:
    return str(ipaddress.ip_address(rdata))
