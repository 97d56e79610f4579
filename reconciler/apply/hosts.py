"""Service discovery: /etc/netns/NAME/hosts, which `ip netns exec NAME` mounts over /etc/hosts."""

from __future__ import annotations

import contextlib
import os

from .. import fault, names
from ..diff import Action
from ..model import HostsFile
from .context import Context


def execute(ctx: Context, action: Action) -> None:
    res = action.resource
    assert isinstance(res, HostsFile)
    folder = os.path.join(names.ETC_NETNS_DIR, res.container)
    path = os.path.join(folder, "hosts")
    if action.op == "delete":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        with contextlib.suppress(OSError):
            os.rmdir(folder)  # only when empty: other files there are not ours
        fault.step()
        return
    os.makedirs(folder, exist_ok=True)
    # Written in place, not renamed: runtimes bind-mount this file into containers (podman -v ...:/etc/hosts),
    # and a bind mount keeps seeing the inode it was given.
    with open(path, "w") as f:
        f.write(res.content)
    fault.step()
