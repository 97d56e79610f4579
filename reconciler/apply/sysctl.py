"""Host sysctls we need (IPv4 forwarding); written through /proc, never reverted."""

from __future__ import annotations

from .. import fault
from ..diff import Action
from ..model import Sysctl
from .context import Context


def write(path: str, value: str) -> None:
    with open(f"/proc/sys/{path}", "w") as f:
        f.write(value)
    fault.step()


def execute(ctx: Context, action: Action) -> None:
    res = action.resource
    assert isinstance(res, Sysctl)
    write(res.name.replace(".", "/"), res.value)
