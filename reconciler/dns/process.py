"""The resolver's life: one per state directory (an exclusive flock held while it runs), its pid in
a file, its control socket; it exits when no scope has records left."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import sys
from pathlib import Path
from types import FrameType

from .server import Resolver, Stop

LOCK, PIDFILE, CONTROL, SCOPES, LOG = (
    "resolver.lock",
    "resolver.pid",
    "control.sock",
    "scopes",
    "resolver.log",
)


def folder_of(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / "dns"


def run(state_dir: str, resolv_conf: str) -> int:
    folder = folder_of(state_dir)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("another resolver serves this state directory", file=sys.stderr)
        return 0
    (folder / PIDFILE).write_text(f"{os.getpid()}\n")
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    resolver = Resolver(folder, resolv_conf)
    try:
        if not resolver.reload():
            return 0  # nothing to serve
        with _control(folder / CONTROL) as control:
            resolver.serve(control)
    except Stop:
        pass
    finally:
        resolver.close()
        with contextlib.suppress(FileNotFoundError):
            (folder / PIDFILE).unlink()
    return 0


@contextlib.contextmanager
def _control(path: Path):  # type: ignore[no-untyped-def]
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a killed resolver's: we hold the lock, so it is no one's
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(16)
        yield sock
    finally:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _stop(_signum: int, _frame: FrameType | None) -> None:
    raise Stop
