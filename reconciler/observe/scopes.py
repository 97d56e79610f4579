"""Which scopes have objects on this host: every kernel object we create names its scope in its mark
(a link's ifalias, a namespace's `lo` alias, a hosts file's header, an nft table's name)."""

from __future__ import annotations

import os
import re

from .. import names, netns
from ..nft import Nft
from ..rtnl import Rtnl
from .links import read_links

_HOSTS_SCOPE = re.compile(re.escape(names.HOSTS_HEADER) + r" \(scope ([a-z][a-z0-9_]*)\)")


def marked_scopes(nft: Nft) -> set[str]:
    found: set[str] = set()
    with Rtnl() as sock:
        found |= _link_scopes(sock)
    netns.each(_paths(names.NETNS_DIR), lambda path, sock: found.update(_link_scopes(sock)))
    for path in _paths(names.ETC_NETNS_DIR):
        try:
            with open(os.path.join(path, "hosts")) as f:
                header = f.readline()
        except OSError:
            continue
        if m := _HOSTS_SCOPE.match(header):
            found.add(m.group(1))
    for _, name in nft.list_tables():
        if name == names.nft_table(names.DEFAULT_SCOPE):
            found.add(names.DEFAULT_SCOPE)
        elif name.startswith(names.MARK_PREFIX + "_"):
            found.add(name.removeprefix(names.MARK_PREFIX + "_"))
    return found


def _link_scopes(sock: Rtnl) -> set[str]:
    return {m[0] for link in read_links(sock).values() if (m := link.mark)}


def _paths(folder: str) -> list[str]:
    try:
        return [os.path.join(folder, n) for n in sorted(os.listdir(folder))]
    except (FileNotFoundError, NotADirectoryError):
        return []
