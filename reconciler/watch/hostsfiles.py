"""Hand edits of our hosts files (/etc/netns/NAME/hosts, and the resolv.conf beside), from inotify, in a
thread of their own.

Raw inotify rather than watchfiles: the watches are in place when `HostsFiles()` returns, so the
daemon's first observation comes after them (a change before is seen by it, a change after is
reported), and a container's folder made later is watched before its hint is sent (a file written
into it before the watch was added is seen by the reconcile that hint starts). Only the hint is
sent: which file changed and how is for the observation and the diff to find.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
import threading
import time
from collections.abc import Callable

from .. import names
from .events import Drift

IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF, IN_Q_OVERFLOW, IN_IGNORED = 0x400, 0x800, 0x4000, 0x8000
IN_ONLYDIR, IN_ISDIR, IN_CLOEXEC = 0x01000000, 0x40000000, 0o2000000
ENTRIES = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO
TOP = ENTRIES | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR
FOLDER = ENTRIES | IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_ONLYDIR
_EVENT = struct.Struct("=iIII")
_libc = ctypes.CDLL(None, use_errno=True)


class HostsFiles:
    """Calls `notify` with a hint naming the container whose hosts file may have changed."""

    def __init__(self, notify: Callable[[Drift], None], top: str = names.ETC_NETNS_DIR) -> None:
        self._notify = notify
        self._top = top
        self._fd = _libc.inotify_init1(IN_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self._folders: dict[int, str] = {}  # watch descriptor -> container
        self._top_wd = -1
        self._watch_top()

    def _watch_top(self) -> None:
        # The folder is ours to make: the first apply with a container would make it anyway.
        os.makedirs(self._top, exist_ok=True)
        self._top_wd = self._add(self._top, TOP)
        for entry in os.scandir(self._top):
            if entry.is_dir(follow_symlinks=False):
                self._watch_folder(entry.name)

    def _watch_folder(self, container: str) -> None:
        # Gone again, or not a folder: nothing to watch; the hint sent for it says the rest.
        with contextlib.suppress(OSError):
            self._folders[self._add(os.path.join(self._top, container), FOLDER)] = container

    def _add(self, path: str, mask: int) -> int:
        wd: int = _libc.inotify_add_watch(self._fd, os.fsencode(path), mask)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}")
        return wd

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="hosts-files", daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        while True:
            data = os.read(self._fd, 1 << 16)
            changed, lost = self._parse(data)
            at = time.monotonic()
            if lost:
                self._notify(Drift(at, full=True))
            elif changed:
                self._notify(Drift(at, hosts=frozenset(changed)))

    def _parse(self, data: bytes) -> tuple[set[str], bool]:
        """The containers whose hosts file may have changed; True when events were lost (the queue
        overflowed, or the top folder went: it is watched again and everything counts as changed)."""
        changed: set[str] = set()
        lost = False
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _, size = _EVENT.unpack_from(data, offset)
            name = os.fsdecode(data[offset + _EVENT.size : offset + _EVENT.size + size].rstrip(b"\0"))
            offset += _EVENT.size + size
            if mask & IN_Q_OVERFLOW:
                lost = True
            elif wd == self._top_wd:
                if mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED):
                    self._folders.clear()
                    self._watch_top()
                    lost = True
                elif name:
                    if mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO):
                        self._watch_folder(name)
                    changed.add(name)
            elif wd in self._folders:
                if mask & IN_IGNORED:
                    del self._folders[wd]
                elif name in ("hosts", "resolv.conf"):
                    changed.add(self._folders[wd])
        return changed, lost
