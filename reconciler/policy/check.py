"""The whole-spec checks of `policies:`: every name known, every CIDR valid, every policy selecting
some container. Each problem names its field (`policies.NAME.to.INDEX`), so it gets its line."""

from __future__ import annotations

import ipaddress

from ..errors import Problem
from ..spec import Broken, Spec
from .model import is_address, members


def policy_problems(spec: Spec, broken: Broken) -> list[Problem]:
    out: list[Problem] = []
    for pname, policy in spec.policies.items():
        at = ("policies", pname)
        selected = False
        for index, entry in enumerate(policy.to):
            where = (*at, "to", index)
            if is_address(entry):
                out.append(Problem(where, f"{entry!r} is an address: `to` names containers or services"))
                continue
            problem = _name_problem(spec, broken, entry)
            if problem is not None:
                out.append(Problem(where, problem))
            selected = selected or bool(members(spec, entry)) or _hidden(broken, entry)
        if not policy.to:
            out.append(Problem((*at, "to"), "a policy must select something: name containers or services"))
        elif not selected and not any(p.path[:3] == (*at, "to") for p in out):
            msg = "this policy selects no container (its services have no backends)"
            out.append(Problem((*at, "to"), msg))
        for index, entry in enumerate(policy.from_):
            problem = _cidr_problem(entry) if is_address(entry) else _name_problem(spec, broken, entry)
            if problem is not None:
                out.append(Problem((*at, "from", index), problem))
    return out


def _hidden(broken: Broken, name: str) -> bool:
    return broken.hides("containers", name) or broken.hides("services", name)


def _name_problem(spec: Spec, broken: Broken, name: str) -> str | None:
    if name in spec.containers or name in spec.services or _hidden(broken, name):
        return None
    return f"unknown container or service {name!r}"


def _cidr_problem(entry: str) -> str | None:
    try:
        net = ipaddress.ip_network(entry, strict=True)
    except ValueError as e:
        return f"invalid address or CIDR {entry!r}: {e}"
    if net.is_multicast:
        return f"{entry} is a multicast prefix: connections come from unicast addresses"
    return None
