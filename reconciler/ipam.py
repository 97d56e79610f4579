"""Built-in IPAM: subnets from default pools and addresses from subnets, stable across runs.

Allocation is a pure function of the spec, the previous record and the prefixes already in use, so
the plan can show addresses before anything is written. Order of precedence for an address: the
spec's static address, then the container's recorded address, then the first free one.

A recorded allocation is kept only while the allocator could have made it for the spec as it is now:
a subnet of the default pools, an address inside the network's ip_range. A subnet or an ip_range the
spec no longer sets does not linger: the result is what a first apply of the spec would choose.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from .drivers.registry import driver_of
from .errors import HostConflict
from .names import HOST_SHIM
from .spec import Attachment, Network, Spec
from .statedir import NetworkRecord, ScopeRecord

IPv4Net = ipaddress.IPv4Network
IPv4 = ipaddress.IPv4Address


def default_pools() -> Iterator[IPv4Net]:
    """Docker's defaults: 172.17-31.0.0/16, then 192.168.0.0/16 cut into /20s."""
    for second in range(17, 32):
        yield IPv4Net(f"172.{second}.0.0/16")
    yield from IPv4Net("192.168.0.0/16").subnets(new_prefix=20)


_POOLS = frozenset(default_pools())


def gateway(net: Network, subnet: IPv4Net) -> IPv4 | None:
    """The network driver's choice (a bridge network always has one, a macvlan one only when given)."""
    return driver_of(net).gateway(net, subnet)


def allocate(spec: Spec, previous: ScopeRecord, in_use: list[IPv4Net]) -> ScopeRecord:
    """Subnets and addresses for every network and attachment of the spec.

    `in_use` holds prefixes taken by other scopes and by the host's own addresses and routes."""
    taken = list(in_use) + [n.subnet for n in spec.networks.values() if n.subnet is not None]
    subnets = {name: net.subnet for name, net in spec.networks.items() if net.subnet is not None}
    # Recorded subnets first: a network declared before an existing one must not take its subnet.
    for name in spec.networks:
        old_subnet = IPv4Net(previous.networks[name].subnet) if name in previous.networks else None
        # Only one the pools would give: a subnet the spec set before it dropped the key does not linger.
        if name not in subnets and old_subnet in _POOLS and not any(old_subnet.overlaps(t) for t in taken):
            subnets[name] = old_subnet
            taken.append(old_subnet)
    record = ScopeRecord(adopted={c: ctr.netns for c, ctr in spec.containers.items() if ctr.netns})
    for name, net in spec.networks.items():
        if net.ipam == "none":
            continue  # L2 only: nothing to allocate or record
        subnet = subnets.get(name) or _auto_subnet(name, taken)
        taken.append(subnet)
        old = previous.networks.get(name)
        old_addresses = old.addresses if old and old.subnet == str(subnet) else {}
        addresses = _addresses(spec, name, net, subnet, old_addresses)
        parent = net.parent or ""  # a network on a host link's LAN segment (macvlan)
        record.networks[name] = NetworkRecord(str(subnet), addresses, parent)
    return record


def _auto_subnet(name: str, taken: list[IPv4Net]) -> IPv4Net:
    for candidate in default_pools():
        if not any(candidate.overlaps(t) for t in taken):
            return candidate
    raise HostConflict(f"network {name}: every default address pool overlaps a prefix in use; set a subnet")


def _addresses(spec: Spec, name: str, net: Network, subnet: IPv4Net, old: dict[str, str]) -> dict[str, str]:
    members = {c: att for c, ctr in spec.containers.items() if (att := ctr.attachments().get(name))}
    if net.host_access:  # the host's shim takes an address too, after the containers
        members[HOST_SHIM] = Attachment()
    gw = gateway(net, subnet)
    used = {gw} if gw is not None else set()
    result: dict[str, IPv4] = {}
    for c, att in members.items():
        if att.ipv4_address is not None:
            result[c] = att.ipv4_address
            used.add(att.ipv4_address)
    pool = net.ip_range or subnet
    for c in members:
        if c in result or c not in old:
            continue
        addr = IPv4(old[c])
        if addr not in used and addr in pool:
            result[c] = addr
            used.add(addr)
    free = _free(pool, subnet, used)
    for c in members:
        if c not in result:
            found = next(free, None)
            if found is None:
                raise HostConflict(
                    f"network {name}: no free address left in {net.ip_range or subnet} for {c}"
                )
            result[c] = found
    # Keep the spec's container order so the record reads naturally.
    return {c: str(result[c]) for c in members}


def _free(pool: IPv4Net, subnet: IPv4Net, used: set[IPv4]) -> Iterator[IPv4]:
    """Every address of the pool (an ip_range may start or end anywhere) but the subnet's own."""
    reserved = () if subnet.prefixlen >= 31 else (subnet.network_address, subnet.broadcast_address)
    for addr in pool:
        if addr not in used and addr not in reserved:
            yield addr
