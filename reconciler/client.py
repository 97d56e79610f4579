"""`reconciler apply` handed to a running `reconciler watch` for the same state directory.

The daemon holds the observed state in memory, kept current by kernel events, so it can plan an apply
without reading the host again (as dockerd does for the docker CLI). This module is the client side,
and it imports next to nothing: with a daemon, interpreter start and the connection are the cost of
an apply. It reads the spec's files, sends them with the options over the daemon's unix socket
(watch/handoff.py), and prints what the daemon answers: the same plan text or JSON, notices, errors
and exit code a local apply gives. It returns None (apply here instead) when no daemon listens, or
when the daemon declines (another scope, suspended, no current observation: see handoff.py), or
when the spec cannot be read as it would be loaded (missing, too large, not UTF-8): a local apply
then reports that exactly as before.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

from .errors import Interrupted, LockBusy, ReconcilerError
from .specfiles import is_spec_name

PROTOCOL = 1
SOCKET = ("watch", "socket", "apply.sock")  # under the state directory
DEFAULT_STATE_DIR = "/var/lib/reconciler"  # statedir.py's, without its imports
MAX_BYTES = 1 << 20  # specload.py's limit per file: a larger one is refused by a local load
CONNECT_WAIT = 2.0
# The daemon writes a line at least every second while it holds a request (handoff.HEARTBEAT).
SILENCE = 10.0


def socket_path(state_dir: str) -> str:
    return os.path.join(state_dir, *SOCKET)


def state_dir_of(option: str | None) -> str:
    return option or os.environ.get("RECONCILER_STATE_DIR") or DEFAULT_STATE_DIR


def hand_over(args: Any) -> int | None:
    """Apply `args.spec` through the daemon and print its answer; the exit code, or None when this
    run must apply locally."""
    files = read_files(args.spec)
    if files is None:
        return None
    path = socket_path(state_dir_of(args.state_dir))
    sock = _connect(path)
    if sock is None:
        return None
    with sock:
        request = {
            "protocol": PROTOCOL,
            "spec": args.spec,
            "cwd": os.getcwd(),
            "directory": os.path.isdir(args.spec),
            "files": files,
            "dry_run": args.dry_run,
            "exit_code": args.exit_code,
            "output": args.output,
            "colour": not os.environ.get("NO_COLOR") and sys.stdout.isatty(),
            "host": args.host,
            "key_file": args.key_file,
            "advertise": args.advertise,
            "rollback": not args.no_rollback,
        }
        try:
            sock.sendall(json.dumps(request).encode() + b"\n")
            answer = _answer(sock, path)
        except KeyboardInterrupt:
            raise Interrupted(
                f"interrupted: the daemon ({path}) finishes the apply it was handed; "
                "see its log or `reconciler status`"
            ) from None
        except (ConnectionResetError, BrokenPipeError):
            raise _gone(path) from None
    if answer.get("state") == "local":
        return None
    sys.stderr.write(str(answer.get("stderr", "")))
    sys.stdout.write(str(answer.get("stdout", "")))
    code = answer.get("exit", 1)
    return code if isinstance(code, int) else 1


def read_files(spec: str) -> list[list[str | None]] | None:
    """[name, text] per spec file (name None for a single file), as the loader would read them; None
    when a local load must report a problem (missing, empty directory, too large, not UTF-8)."""
    try:
        if not os.path.isdir(spec):
            text = _text(spec)
            return None if text is None else [[None, text]]
        names = sorted(n for n in os.listdir(spec) if is_spec_name(n))
        names = [n for n in names if os.path.isfile(os.path.join(spec, n))]
        out: list[list[str | None]] = []
        for name in names:
            text = _text(os.path.join(spec, name))
            if text is None:
                return None
            out.append([name, text])
    except OSError:
        return None
    return out or None


def _text(path: str) -> str | None:
    with open(path, "rb") as f:
        raw = f.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _connect(path: str) -> socket.socket | None:
    """The daemon's socket, or None when no daemon listens there (or not for us: not root)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CONNECT_WAIT)
    try:
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError, PermissionError, NotADirectoryError):
        sock.close()
        return None  # no daemon (or a dead one's socket): apply here
    except OSError as e:
        sock.close()
        raise ReconcilerError(
            f"the daemon at {path} does not accept connections ({e}); "
            "`reconciler apply --local` applies without it"
        ) from e
    sock.settimeout(SILENCE)
    return sock


def _answer(sock: socket.socket, path: str) -> dict[str, Any]:
    """The daemon's final line, past its heartbeats."""
    reader = sock.makefile("rb")
    while True:
        try:
            line = reader.readline()
        except TimeoutError:
            raise ReconcilerError(f"the daemon at {path} sent nothing for {SILENCE:g} s: gave up") from None
        if not line.endswith(b"\n"):
            raise _gone(path)
        answer = json.loads(line)
        state = answer.get("state")
        if state == "busy":
            raise LockBusy(f"the daemon at {path} {answer.get('reason', 'is busy')}")
        if state != "wait":
            return dict(answer)


def _gone(path: str) -> ReconcilerError:
    return ReconcilerError(
        f"the daemon at {path} went away before it answered (did it stop?); if it was applying, "
        "its journal lets the next apply finish the job: run `reconciler apply` again"
    )
