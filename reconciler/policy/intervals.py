"""Allowed (source, port) space as disjoint nftables set elements.

An interval set refuses an element that overlaps one it holds (`File exists`, depending on the
order they were added), so the union of every policy's rectangles (source range x port range) is
cut into disjoint ones first: the source axis at every rectangle's edge, then each piece's port
ranges merged. Source ranges are written as CIDR blocks, port ranges as single ports or ranges:
the forms the kernel lists them back in, so observed elements compare equal to desired ones.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterable
from typing import Any

Span = tuple[int, int]  # inclusive


def merge(spans: Iterable[Span]) -> list[Span]:
    """Overlapping or touching spans joined, in order."""
    out: list[Span] = []
    for lo, hi in sorted(spans):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def disjoint(rects: Iterable[tuple[Span, Span]]) -> list[tuple[Span, Span]]:
    """(source span, port span) rectangles -> disjoint ones covering the same area."""
    rects = list(rects)
    edges = sorted({lo for (lo, _), _ in rects} | {hi + 1 for (_, hi), _ in rects})
    pieces: list[tuple[Span, list[Span]]] = []
    for lo, nxt in itertools.pairwise(edges):
        ports = merge(p for (s_lo, s_hi), p in rects if s_lo <= lo and nxt - 1 <= s_hi)
        if not ports:
            continue
        if pieces and pieces[-1][1] == ports and pieces[-1][0][1] == lo - 1:
            pieces[-1] = ((pieces[-1][0][0], nxt - 1), ports)
        else:
            pieces.append(((lo, nxt - 1), ports))
    return [(src, port) for src, ports in pieces for port in ports]


def address_values(span: Span, version: int) -> list[Any]:
    """A source span as CIDR blocks in libnftables JSON (a single address plain)."""
    cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    out: list[Any] = []
    for net in ipaddress.summarize_address_range(cls(span[0]), cls(span[1])):
        if net.prefixlen == net.max_prefixlen:
            out.append(str(net.network_address))
        else:
            out.append({"prefix": {"addr": str(net.network_address), "len": net.prefixlen}})
    return out


def port_value(span: Span) -> Any:
    return span[0] if span[0] == span[1] else {"range": [span[0], span[1]]}
