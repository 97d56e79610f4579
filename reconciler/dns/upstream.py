"""The host's upstream servers: the nameservers of its /etc/resolv.conf, read again when it changes
(moby #25452: Docker kept stale ones), in the order of the last one that answered first."""

from __future__ import annotations

import ipaddress
import os

HOST_RESOLV_CONF = "/etc/resolv.conf"
PORT = 53


class Upstreams:
    def __init__(self, path: str = HOST_RESOLV_CONF) -> None:
        self.path = path
        self._seen: tuple[int, int, int, int] | None = None
        self.servers: list[str] = []
        self.preferred = 0  # index of the server tried first: a dead one is skipped after one timeout

    def current(self) -> list[str]:
        """The servers, in the order to try them; a stat per call (forwarded queries only)."""
        try:
            st = os.stat(self.path)
            seen = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            seen = None
        if seen != self._seen:
            self._seen = seen
            self.servers = read_servers(self.path) if seen else []
            self.preferred = 0
        n = len(self.servers)
        return [self.servers[(self.preferred + i) % n] for i in range(n)]

    def failed(self, server: str) -> None:
        """`server` did not answer: the next query starts with the one after it."""
        if server in self.servers and self.servers[self.preferred % len(self.servers)] == server:
            self.preferred = (self.servers.index(server) + 1) % len(self.servers)


def read_servers(path: str) -> list[str]:
    servers = []
    try:
        with open(path) as f:
            for line in f:
                words = line.split()
                if len(words) >= 2 and words[0] == "nameserver":
                    address = words[1].split("%")[0]  # fe80::1%eth0: the zone is the host's own
                    try:
                        servers.append(str(ipaddress.ip_address(address)))
                    except ValueError:
                        continue
    except OSError:
        return []
    return servers
