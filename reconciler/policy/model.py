"""What the policies of a spec mean, computed from the spec alone (pure): Kubernetes NetworkPolicy's
ingress semantics for plain containers.

A container named in any policy's `to` (itself, or as a backend of a service named there) is
isolated: it accepts new connections only from the union of the `from`s and `ports` of the policies
naming it. Containers no policy names are unaffected. Replies and established flows are not
policy's business (the firewall passes them first). Empty `ports` means every port and protocol.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..spec import IP, Net, PolicyPort, Spec


@dataclass(frozen=True)
class Rule:
    """What one policy admits to one selected container: source containers and CIDRs, on `ports`
    (empty: every port of every protocol)."""

    policy: str
    containers: frozenset[str]
    cidrs: tuple[Net, ...]
    ports: tuple[PolicyPort, ...]


def is_address(entry: str) -> bool:
    """A `from` entry is an address or a CIDR when it reads as one; anything else is a name."""
    try:
        ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return "/" in entry or ":" in entry
    return True


def members(spec: Spec, name: str) -> list[str]:
    """The containers a name stands for: the container itself, or a service's backends."""
    if name in spec.containers:
        return [name]
    service = spec.services.get(name)
    return list(service.backends) if service is not None else []


def rules(spec: Spec) -> dict[str, list[Rule]]:
    """Per selected container, the rules of every policy selecting it, in spec order."""
    out: dict[str, list[Rule]] = {}
    for pname, policy in spec.policies.items():
        rule = Rule(
            pname,
            frozenset(c for entry in policy.from_ if not is_address(entry) for c in members(spec, entry)),
            tuple(ipaddress.ip_network(e, strict=False) for e in policy.from_ if is_address(e)),
            tuple(policy.policy_ports()),
        )
        for entry in policy.to:
            for c in members(spec, entry):
                if rule not in out.setdefault(c, []):
                    out[c].append(rule)
    return out


def port_allows(ports: Iterable[PolicyPort], protocol: str, port: int) -> PolicyPort | None:
    return next((p for p in ports if p.protocol == protocol and p.first <= port <= p.last), None)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    policy: str | None  # the policy that admits it (the first one, in spec order)
    reason: str


def admits(
    selected: dict[str, list[Rule]],
    dst: str,
    protocol: str,
    port: int,
    src: str | None = None,
    src_address: IP | None = None,
) -> Verdict:
    """Whether the policies let a new connection from `src` (a container) or `src_address` to `dst`."""
    their = selected.get(dst)
    if not their:
        return Verdict(True, None, f"no policy selects {dst}: it accepts connections from anyone")
    for rule in their:
        who = _source_matches(rule, src, src_address)
        if who is None:
            continue
        if rule.ports and port_allows(rule.ports, protocol, port) is None:
            continue
        on = "every port" if not rule.ports else ", ".join(map(str, rule.ports))
        return Verdict(True, rule.policy, f"policy {rule.policy} admits {who} to {dst} on {on}")
    names = ", ".join(r.policy for r in their)
    source = src if src is not None else str(src_address)
    why = f"{dst} is isolated by {names}, and none admits {source} on {port}/{protocol}"
    return Verdict(False, None, why)


def _source_matches(rule: Rule, src: str | None, src_address: IP | None) -> str | None:
    if src is not None and src in rule.containers:
        return src
    if src_address is not None:
        net = next((n for n in rule.cidrs if n.version == src_address.version and src_address in n), None)
        if net is not None:
            return f"{src_address} (in {net})"
    return None
