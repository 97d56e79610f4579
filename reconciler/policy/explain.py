"""`reconciler explain`: whether SRC may open a connection to DST on PORT/PROTO, and why, from the
spec alone: first network isolation (shared networks, icc, internal networks, how the outside gets
in), then the policies (`model.admits`)."""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field
from typing import Any

from ..drivers.registry import driver_of
from ..errors import ReconcilerError
from ..spec import IP, Spec, parse_policy_port
from .model import admits, members, rules

EXIT_ALLOWED, EXIT_DENIED, EXIT_BAD_INPUT = 0, 1, 2


class BadQuery(ReconcilerError):
    exit_code = EXIT_BAD_INPUT


@dataclass(frozen=True)
class Answer:
    destination: str
    allowed: bool
    denied_by: str | None  # "networks", "icc", "internal", "outside" or "policy"; None when allowed
    policy: str | None  # the policy admitting it, when one had to
    reason: str


@dataclass(frozen=True)
class Explanation:
    source: str
    destination: str
    port: str
    allowed: bool
    answers: list[Answer] = field(default_factory=list)  # one per container DST stands for

    def json(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        verdict = "allowed" if self.allowed else "denied"
        lines = [f"{self.source} -> {self.destination} {self.port}: {verdict}"]
        for a in self.answers:
            lines.append(f"  {a.destination}: {'allowed' if a.allowed else 'denied'}: {a.reason}")
        return "\n".join(lines)


def explain(spec: Spec, src: str, dst: str, port_text: str) -> Explanation:
    try:
        port = parse_policy_port(port_text)
    except ValueError as e:
        raise BadQuery(str(e)) from None
    if port.first != port.last:
        raise BadQuery(f"{port_text!r}: explain takes one port, not a range")
    address = _address(src)
    if address is None and src not in spec.containers:
        raise BadQuery(f"unknown source {src!r}: name a container of the spec, or an address")
    backends = members(spec, dst)
    if not backends:
        raise BadQuery(f"unknown destination {dst!r}: name a container or a service of the spec")
    service = spec.services.get(dst) if dst not in spec.containers else None
    networks = [service.network] if service is not None else None
    answers = [_one(spec, src, address, b, networks, port.protocol, port.first) for b in backends]
    return Explanation(src, dst, str(port), all(a.allowed for a in answers), answers)


def _address(text: str) -> IP | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _one(
    spec: Spec, src: str, address: IP | None, dst: str, via: list[str] | None, protocol: str, port: int
) -> Answer:
    isolation = (
        _outside(spec, address, dst, protocol, port) if address is not None else _between(spec, src, dst, via)
    )
    if isolation is not None:
        return Answer(dst, False, isolation[0], None, isolation[1])
    if address is None:
        address = _static_address(spec, src)
        verdict = admits(rules(spec), dst, protocol, port, src=src, src_address=address)
    else:
        verdict = admits(rules(spec), dst, protocol, port, src_address=address)
    return Answer(dst, verdict.allowed, None if verdict.allowed else "policy", verdict.policy, verdict.reason)


def _between(spec: Spec, src: str, dst: str, via: list[str] | None) -> tuple[str, str] | None:
    theirs = spec.containers[dst].attachments()
    shared = [n for n in spec.containers[src].attachments() if n in theirs and (via is None or n in via)]
    if not shared:
        where = f"network {via[0]} (the service's)" if via else ", ".join(theirs) or "no network"
        mine = ", ".join(spec.containers[src].attachments()) or "no network"
        why = f"{src} is on {mine}, {dst} on {where}: networks are isolated from each other"
        return "networks", why
    if all(not spec.networks[n].icc for n in shared):
        return "icc", f"network {shared[0]} has icc: false: its containers do not reach each other"
    return None


def _outside(spec: Spec, address: IP, dst: str, protocol: str, port: int) -> tuple[str, str] | None:
    """An address is a client outside the spec's networks: it gets in through a published port, or
    straight to the container on a network the host does not route (it is on the parent's LAN)."""
    nets = {n: spec.networks[n] for n in spec.containers[dst].attachments()}
    if nets and all(net.internal for net in nets.values()):
        return "internal", f"{dst} is only on internal networks ({', '.join(nets)}): nothing gets in"
    if any(not driver_of(net).routed for net in nets.values()):
        return None
    published = [
        pm
        for pm in spec.containers[dst].port_mappings()
        if pm.protocol == protocol and pm.container_port == port
    ]
    if not published:
        why = f"{dst} publishes no host port for {port}/{protocol}: the outside reaches it only through one"
        return "outside", why
    return None


def _static_address(spec: Spec, container: str) -> IP | None:
    for att in spec.containers[container].attachments().values():
        if att.ipv4_address is not None:
            return att.ipv4_address
    return None
