"""Service discovery: /etc/netns/NAME/hosts and resolv.conf, which `ip netns exec NAME` mounts over
/etc/hosts and /etc/resolv.conf: the container's own names, and the resolver (reconciler.dns) for the rest."""

from __future__ import annotations

import contextlib
import os

from .. import fault, names
from ..diff import Action
from ..dns import RESOLV_CONF, RESOLV_CONF_HEADER
from ..model import HostsFile
from .context import Context


def execute(ctx: Context, action: Action) -> None:
    res = action.resource
    assert isinstance(res, HostsFile)
    folder = os.path.join(names.ETC_NETNS_DIR, res.container)
    path = os.path.join(folder, "hosts")
    resolv = os.path.join(folder, "resolv.conf")
    if action.op == "delete":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        if _ours(resolv):
            os.unlink(resolv)
        with contextlib.suppress(OSError):
            os.rmdir(folder)  # only when empty: other files there are not ours
        fault.step()
        return
    os.makedirs(folder, exist_ok=True)
    # Written in place, not renamed: runtimes bind-mount this file into containers (podman -v ...:/etc/hosts),
    # and a bind mount keeps seeing the inode it was given.
    with open(path, "w") as f:
        f.write(res.content)
    now = _read(resolv)
    # A resolv.conf someone else put there stays; ours is written only when it differs (a write is an
    # inotify event the daemon would look at).
    if now is None or (now != RESOLV_CONF and now.startswith(RESOLV_CONF_HEADER)):
        with open(resolv, "w") as f:
            f.write(RESOLV_CONF)
    fault.step()


def _ours(path: str) -> bool:
    return (_read(path) or "").startswith(RESOLV_CONF_HEADER)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read(len(RESOLV_CONF) + 1)
    except FileNotFoundError:
        return None
