"""Who still uses a network namespace we are about to unmount: processes inside it, other mounts of it.

Unmounting /run/netns/NAME frees a namespace only when nothing else holds it; a process that lives
in it (a container's workload) or another bind mount of it keeps it, and its veths, alive. Those are
found without a fork: a namespace is an nsfs inode, and every thread's /proc/PID/task/TID/ns/net and
every nsfs mount in /proc/self/mountinfo names the inode it refers to. Open file descriptors on it
(/proc/PID/fd/N) are looked at only when asked: there are many more of them.
Holders we cannot see this way (a socket made inside it, a mount in another mount namespace) are
what the bounded wait in the executors is for.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

NsId = tuple[int, int]  # (st_dev, st_ino) of the nsfs inode


@dataclass
class Users:
    """What keeps one namespace alive besides our mount of it."""

    processes: set[int] = field(default_factory=set)  # with a thread inside
    mounts: list[str] = field(default_factory=list)
    fd_holders: set[int] = field(default_factory=set)  # processes elsewhere with a descriptor on it

    def describe(self) -> str:
        parts = []
        if self.processes:
            n = len(self.processes)
            parts.append(f"{n} process" + ("es" if n > 1 else ""))
        if self.fd_holders - self.processes:
            n = len(self.fd_holders - self.processes)
            parts.append(f"an open file of {n} process" + ("es" if n > 1 else ""))
        if self.mounts:
            parts.append("a mount at " + ", ".join(self.mounts))
        return " and ".join(parts)


def users(paths: Iterable[str], fds_of: Collection[str] = ()) -> dict[str, Users]:
    """Namespace path -> its users, for the mounted namespaces among `paths` that have any; for those
    in `fds_of`, open file descriptors count too."""
    wanted = _inodes(paths)
    if not wanted:
        return {}
    found: dict[str, Users] = {}
    for pid, ns in _process_namespaces():
        if ns in wanted:
            found.setdefault(wanted[ns], Users()).processes.add(pid)
    mounts = list(_nsfs_mounts(wanted))
    for ns, mount_point in mounts:
        if mount_point != wanted[ns]:
            found.setdefault(wanted[ns], Users()).mounts.append(mount_point)
    by_inode = {ino: path for (_, ino), path in wanted.items() if path in fds_of}
    if by_inode:
        nsfs_paths = {*wanted.values(), *(point for _, point in mounts)}
        for pid, ino in _open_namespaces(nsfs_paths):
            if ino in by_inode:
                found.setdefault(by_inode[ino], Users()).fd_holders.add(pid)
    return found


def _inodes(paths: Iterable[str]) -> dict[NsId, str]:
    out: dict[NsId, str] = {}
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        out[(st.st_dev, st.st_ino)] = path
    return out


def _process_namespaces() -> Iterable[tuple[int, NsId]]:
    """(pid, namespace) for every namespace any thread of any process is in (setns is per thread)."""
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue  # our own threads always return to our namespace (netns._in_thread)
        try:
            tids = os.listdir(f"/proc/{name}/task")
        except OSError:
            continue  # exited meanwhile
        seen: set[NsId] = set()
        for tid in tids:
            try:
                st = os.stat(f"/proc/{name}/task/{tid}/ns/net")
            except OSError:
                continue
            ns = (st.st_dev, st.st_ino)
            if ns not in seen:
                seen.add(ns)
                yield int(name), ns


def _open_namespaces(nsfs_paths: set[str]) -> Iterable[tuple[int, int]]:
    """(pid, nsfs inode) for every namespace file another process holds open. A descriptor reads as
    `net:[INODE]`, or as the path it was opened by when that is a mount of the namespace; only those
    paths are stat'ed (a stat could hang on a dead network file system, a readlink cannot)."""
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue  # ours are closed before the unmount (Context.forget)
        try:
            fds = os.listdir(f"/proc/{name}/fd")
        except OSError:
            continue
        for fd in fds:
            link = f"/proc/{name}/fd/{fd}"
            try:
                target = os.readlink(link)
                if target.startswith("net:["):
                    yield int(name), int(target[5:-1])
                elif target in nsfs_paths:
                    yield int(name), os.stat(link).st_ino
            except OSError:
                continue


def _nsfs_mounts(wanted: Collection[NsId]) -> Iterable[tuple[NsId, str]]:
    """(namespace, mount point) of every mount of the `wanted` namespaces in our mount namespace.
    The table has a line per namespace we mounted (1,000 containers, 1,000 lines): only the lines
    naming a wanted inode are split, found by a substring search of the whole text."""
    with open("/proc/self/mountinfo") as f:
        text = f.read()
    for ino in sorted({ino for _, ino in wanted}):
        needle = f" net:[{ino}] "
        at = text.find(needle)
        while at >= 0:
            start = text.rfind("\n", 0, at) + 1
            end = text.find("\n", at)
            found = _nsfs_mount(text[start : end if end >= 0 else len(text)])
            if found is not None and found[0] in wanted:
                yield found
            at = text.find(needle, at + len(needle))


def _nsfs_mount(line: str) -> tuple[NsId, str] | None:
    """A mountinfo line's (namespace, mount point) when it is an nsfs mount of a network namespace."""
    fields = line.split()
    # ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
    sep = fields.index("-")
    root = fields[3]
    if fields[sep + 1] != "nsfs" or not root.startswith("net:["):
        return None
    major, minor = (int(x) for x in fields[2].split(":"))
    return (os.makedev(major, minor), int(root[5:-1])), _unescape(fields[4])


def _unescape(path: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code in ("040", "011", "012", "134"):
        path = path.replace("\\" + code, chr(int(code, 8)))
    return path
