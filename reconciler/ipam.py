"""Built-in IPAM: subnets from default pools and addresses from subnets, stable across runs.

Allocation is a pure function of the spec, the previous record and the prefixes already in use, so
the plan can show addresses before anything is written. Order of precedence for an address: the
spec's static address, then the container's recorded address, then the first free one.

A recorded allocation is kept only while the allocator could have made it for the spec as it is now:
a subnet of the default pools, an address inside the network's ip_range. A subnet or an ip_range the
spec no longer sets does not linger: the result is what a first apply of the spec would choose.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from .drivers.registry import driver_of
from .endpoints import ipv6_address, text
from .errors import HostConflict
from .names import HOST_SHIM
from .statedir import NetworkRecord, ScopeRecord

if TYPE_CHECKING:
    from .spec import IP, Attachment, Net, Network, Spec

IPv4Net = ipaddress.IPv4Network
IPv6Net = ipaddress.IPv6Network
IPv4 = ipaddress.IPv4Address


def default_pools() -> Iterator[IPv4Net]:
    """Docker's defaults: 172.17-31.0.0/16, then 192.168.0.0/16 cut into /20s."""
    for second in range(17, 32):
        yield IPv4Net(f"172.{second}.0.0/16")
    yield from IPv4Net("192.168.0.0/16").subnets(new_prefix=20)


_POOLS = frozenset(default_pools())


def gateway(net: Network, subnet: Net) -> IP | None:
    """The network driver's choice (a bridge network always has one, a macvlan one only when given)."""
    return driver_of(net).gateway(net, subnet)


class Moved(HostConflict):
    """A part's allocation (`reserved`) cannot keep the rest's entries: a whole plan must move them."""


def allocate(
    spec: Spec, previous: ScopeRecord, in_use: Sequence[Net], reserved: ScopeRecord | None = None
) -> ScopeRecord:
    """Subnets and addresses for every network and attachment of the spec.

    `in_use` holds prefixes (of either family) taken by other scopes and by the host's own addresses
    and routes. `reserved`: when `spec` is a part of the scope's spec (session.narrow), the record
    entries of the rest, kept as they are and in the result; their addresses are not handed out.
    Raises `Moved` when they cannot stay (their subnet moved, a static address takes one)."""
    taken = [p for p in in_use if p.version == 4] + [n.subnet for n in spec.networks.values() if n.subnet]
    taken6 = [p for p in in_use if p.version == 6] + [n.subnet6 for n in spec.networks.values() if n.subnet6]
    subnets = {name: net.subnet for name, net in spec.networks.items() if net.subnet is not None}
    subnets6 = {name: net.subnet6 for name, net in spec.networks.items() if net.subnet6 is not None}
    # Recorded subnets first: a network declared before an existing one must not take its subnet.
    for name, net in spec.networks.items():
        old = previous.networks.get(name)
        old_subnet = IPv4Net(old.subnet) if old and old.subnet else None
        # Only one the pools would give: a subnet the spec set before it dropped the key does not linger.
        if name not in subnets and old_subnet in _POOLS and not any(old_subnet.overlaps(t) for t in taken):
            subnets[name] = old_subnet
            taken.append(old_subnet)
        old6 = IPv6Net(old.subnet6) if old and old.subnet6 else None
        pooled = net.ipv6 and name not in subnets6 and old6 is not None and old6 in _ula_pool(name)
        if pooled and old6 is not None and not any(old6.overlaps(t) for t in taken6):
            subnets6[name] = old6
            taken6.append(old6)
    record = ScopeRecord(adopted={c: ctr.netns for c, ctr in spec.containers.items() if ctr.netns})
    for name, net in spec.networks.items():
        if net.ipam == "none":
            continue  # L2 only: nothing to allocate or record
        old = previous.networks.get(name)
        rec = NetworkRecord("", parent=net.parent or "")  # parent: a network on a host link's LAN (macvlan)
        members = _members(spec, name, net)
        kept = reserved.networks.get(name) if reserved is not None else None
        if net.has_ipv4:
            subnet = subnets.get(name) or _auto_subnet(name, taken)
            taken.append(subnet)
            old_addresses = old.addresses if old and old.subnet == str(subnet) else {}
            rec.subnet = str(subnet)
            held = _held(name, kept.subnet, kept.addresses, rec.subnet) if kept else {}
            rec.addresses = _addresses(members, name, net, subnet, old_addresses, held)
        if net.has_ipv6:
            subnet6 = subnets6.get(name) or _auto_subnet6(name, taken6)
            taken6.append(subnet6)
            old_addresses = old.addresses6 if old and old.subnet6 == str(subnet6) else {}
            rec.subnet6 = str(subnet6)
            held = _held(name, kept.subnet6, kept.addresses6, rec.subnet6) if kept else {}
            rec.addresses6 = _addresses(members, name, net, subnet6, old_addresses, held)
        record.networks[name] = rec
    return record


def _held(network: str, kept_subnet: str, kept: dict[str, str], subnet: str) -> dict[str, str]:
    """The reserved entries of one network and family, which must lie in the subnet allocated now."""
    if not kept:
        return {}
    if kept_subnet != subnet:
        raise Moved(f"network {network}: its subnet moved from {kept_subnet} to {subnet}")
    return kept


def _auto_subnet(name: str, taken: list[IPv4Net]) -> IPv4Net:
    for candidate in default_pools():
        if not any(candidate.overlaps(t) for t in taken):
            return candidate
    raise HostConflict(f"network {name}: every default address pool overlaps a prefix in use; set a subnet")


ULA_TRIES = 64


def _ula_pool(name: str) -> list[IPv6Net]:
    """RFC 4193 unique local /64s for a network, derived from its name: the same on every run and
    host, unlikely to meet another site's, and independent of the order networks are declared in."""
    out = []
    for attempt in range(ULA_TRIES):
        digest = hashlib.sha256(f"{name}/{attempt}".encode()).digest()
        prefix = bytes([0xFD]) + digest[:7]  # fd00::/8, a 40-bit global ID and a 16-bit subnet ID
        out.append(IPv6Net((int.from_bytes(prefix + bytes(8), "big"), 64)))
    return out


def _auto_subnet6(name: str, taken: list[IPv6Net]) -> IPv6Net:
    for candidate in _ula_pool(name):
        if not any(candidate.overlaps(t) for t in taken):
            return candidate
    raise HostConflict(f"network {name}: every IPv6 pool prefix overlaps a prefix in use; set an IPv6 subnet")


def _members(spec: Spec, name: str, net: Network) -> dict[str, Attachment]:
    """Who takes an address on the network, in spec order (once per network, for both families)."""
    members = {c: att for c, ctr in spec.containers.items() if (att := ctr.attachments().get(name))}
    if net.host_access:  # the host's shim takes an address too, after the containers
        from .spec import Attachment

        members[HOST_SHIM] = Attachment()
    return members


def _addresses(
    members: dict[str, Attachment],
    name: str,
    net: Network,
    subnet: Net,
    old: dict[str, str],
    held: dict[str, str],
) -> dict[str, str]:
    """`held`: the reserved entries (`allocate`), in the result as they are."""
    if not members:
        return dict(held)  # a network the part has no member of: nothing to parse
    version = subnet.version
    gw = gateway(net, subnet)
    # Addresses as numbers: a part reserves every other member's, and hashing ints is C's work.
    taken = {_number(a, version) for a in held.values()}
    used = taken | {int(gw)} if gw is not None else set(taken)
    result: dict[str, IP] = {}
    for c, att in members.items():
        static = att.ipv4_address if version == 4 else att.ipv6_address
        if static is not None:
            if int(static) in taken:
                raise Moved(f"network {name}: {c}'s address {static} is held by another container")
            result[c] = static
            used.add(int(static))
    pool = (net.ip_range if version == 4 else net.ip_range6) or subnet
    for c in members:
        if c in result or c not in old:
            continue
        addr = ipv6_address(old[c]) if version == 6 else IPv4(old[c])
        if int(addr) not in used and addr in pool:
            result[c] = addr
            used.add(int(addr))
    free = _free(pool, subnet, used)
    for c in members:
        if c not in result:
            found = next(free, None)
            if found is None:
                raise HostConflict(f"network {name}: no free address left in {pool} for {c}")
            result[c] = found
    # Keep the spec's container order so the record reads naturally.
    return {**held, **{c: text(result[c]) for c in members}}


@functools.lru_cache(maxsize=65536)
def _number(text: str, version: int) -> int:
    """A recorded address as a number, parsed once per address."""
    return int(ipv6_address(text) if version == 6 else IPv4(text))


def _free(pool: Net, subnet: Net, used: set[int]) -> Iterator[IP]:
    """Every address of the pool (an ip_range may start or end anywhere) but the subnet's own: its
    network and broadcast addresses (IPv4), its subnet-router anycast address (IPv6)."""
    if subnet.prefixlen >= subnet.max_prefixlen - 1:  # /31, /32, /127, /128 (macvlan): none reserved
        reserved: tuple[int, ...] = ()
    elif subnet.version == 6:
        reserved = (int(subnet.network_address),)
    else:
        reserved = (int(subnet.network_address), int(subnet.broadcast_address))
    make = type(pool.network_address)
    for number in range(int(pool.network_address), int(pool.broadcast_address) + 1):
        if number not in used and number not in reserved:
            yield make(number)
