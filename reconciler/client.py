"""`reconciler apply` handed to a running `reconciler watch` for the same state directory.

The daemon holds the observed state in memory, kept current by kernel events, so it can plan an apply
without reading the host again (as dockerd does for the docker CLI). This module is the client side,
and it imports next to nothing: with a daemon, interpreter start and the connection are the cost of
an apply. The command's entry (entry.py) reads apply's arguments here (`apply_options`) without
argparse, then `hand_over` reads the spec's files, sends them with the options over the daemon's
unix socket (watch/handoff.py), and prints what the daemon answers: the same plan text or JSON,
notices, errors and exit code a local apply gives. It returns None (apply here instead) when no
daemon listens, or when the daemon declines (another scope, suspended, no current observation: see
handoff.py), or when the spec cannot be read as it would be loaded (missing, too large, not UTF-8):
a local apply then reports that exactly as before.

What this path imports is most of its cost, so it imports little: the C halves of socket and json
(`_socket`, `_json`), not the modules around them, which import re, enum and selectors (half of
the client's CPU time); the error classes only to raise one (errors.py imports typing).
"""

from __future__ import annotations

import _socket
import os
import sys
from _json import encode_basestring_ascii, make_scanner
from types import SimpleNamespace

from .specfiles import is_spec_name

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (mypy reads the name)
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from .errors import ReconcilerError

PROTOCOL = 1
SOCKET = ("watch", "socket", "apply.sock")  # under the state directory
DEFAULT_STATE_DIR = "/var/lib/reconciler"  # statedir.py's, without its imports
DEFAULT_KEY_FILE = "/etc/netreconciler/wireguard.key"  # wgkeys.py's, without its imports
MAX_BYTES = 1 << 20  # specload.py's limit per file: a larger one is refused by a local load
CONNECT_WAIT = 2.0
# The daemon writes a line at least every second while it holds a request (handoff.HEARTBEAT).
SILENCE = 10.0
# apply's options (cli.py) by their full names, and the attribute argparse gives each.
FLAGS = {"--dry-run": "dry_run", "--exit-code": "exit_code", "--no-rollback": "no_rollback"}
FLAGS |= {"-q": "quiet", "--quiet": "quiet"}
VALUES = {"-o": "output", "--output": "output", "--host": "host", "--key-file": "key_file"}
VALUES |= {"--advertise": "advertise", "--state-dir": "state_dir"}
OUTPUTS = ("text", "json")


def apply_options(argv: list[str]) -> SimpleNamespace | None:
    """`reconciler apply ARGS` as cli.py's parser reads it, when ARGS are plainly written: one spec,
    options by their full names (`--output json` or `--output=json`, `-o json`). None for anything
    else (another command, --local, --help, an abbreviation, a mistake), which argparse parses."""
    if not argv or argv[0] != "apply":
        return None
    found: dict[str, object] = {"spec": None, "output": "text", "key_file": DEFAULT_KEY_FILE}
    found |= dict.fromkeys(("host", "advertise", "state_dir"))
    found |= dict.fromkeys(FLAGS.values(), False)
    rest = iter(argv[1:])
    for arg in rest:
        name, equals, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in FLAGS and not equals:
            found[FLAGS[name]] = True
        elif name in VALUES:
            if not equals:
                value = next(rest, "-")  # none is an error argparse reports, as a value like an option
                if value.startswith("-"):
                    return None
            if VALUES[name] == "output" and value not in OUTPUTS:
                return None  # argparse checks every occurrence, not the last one
            found[VALUES[name]] = value
        elif arg.startswith("-") or found["spec"] is not None:
            return None
        else:
            found["spec"] = arg
    if found["spec"] is None:
        return None
    return SimpleNamespace(**found)


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
        sock.sendall(encoded(request).encode() + b"\n")
        answer = _answer(sock, path)
    except KeyboardInterrupt:
        from .errors import Interrupted

        raise Interrupted(
            f"interrupted: the daemon ({path}) finishes the apply it was handed; "
            "see its log or `reconciler status`"
        ) from None
    except (ConnectionResetError, BrokenPipeError):
        raise _gone(path) from None
    finally:
        sock.close()
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


def _connect(path: str) -> _socket.socket | None:
    """The daemon's socket, or None when no daemon listens there (or not for us: not root)."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(CONNECT_WAIT)
    try:
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError, PermissionError, NotADirectoryError):
        sock.close()
        return None  # no daemon (or a dead one's socket): apply here
    except OSError as e:
        sock.close()
        from .errors import ReconcilerError

        raise ReconcilerError(
            f"the daemon at {path} does not accept connections ({e}); "
            "`reconciler apply --local` applies without it"
        ) from e
    sock.settimeout(SILENCE)
    return sock


def _answer(sock: _socket.socket, path: str) -> dict[str, Any]:
    """The daemon's final line, past its heartbeats."""
    for line in _lines(sock, path):
        answer = decoded(line)
        if answer is None:
            from .errors import ReconcilerError

            unreadable = f"the daemon at {path} answered what this client cannot read: {line[:80]!r}"
            raise ReconcilerError(unreadable)
        state = answer.get("state")
        if state == "busy":
            from .errors import LockBusy

            raise LockBusy(f"the daemon at {path} {answer.get('reason', 'is busy')}")
        if state != "wait":
            return answer
    raise _gone(path)


def _lines(sock: _socket.socket, path: str) -> Iterator[bytes]:
    """The daemon's lines as they come, until it closes the connection (an unfinished line is lost)."""
    chunks: list[bytes] = []
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except TimeoutError:
            from .errors import ReconcilerError

            raise ReconcilerError(f"the daemon at {path} sent nothing for {SILENCE:g} s: gave up") from None
        if not chunk:
            return
        if b"\n" not in chunk:
            chunks.append(chunk)
            continue
        *lines, rest = b"".join([*chunks, chunk]).split(b"\n")
        yield from lines
        chunks = [rest]


class _Plain:
    """What json's C scanner reads from a decoder: plain JSON, as `json.loads` reads it."""

    strict = True
    object_hook = object_pairs_hook = array_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float  # NaN, Infinity, -Infinity


_scan = make_scanner(_Plain)  # type: ignore[arg-type]  # the scanner reads only these attributes


def decoded(line: bytes) -> dict[str, Any] | None:
    """One of the daemon's lines: a JSON object, or None."""
    text = line.decode(errors="replace").strip()
    try:
        value, end = _scan(text, 0)
    except (StopIteration, ValueError):  # StopIteration: the scanner found no value at all
        return None
    return value if isinstance(value, dict) and end == len(text) else None


def encoded(value: object) -> str:
    """JSON of the request: strings, booleans, None, integers, lists and string-keyed mappings."""
    match value:
        case None:
            return "null"
        case bool():
            return "true" if value else "false"
        case int():
            return str(value)
        case str():
            return encode_basestring_ascii(value)
        case list():
            return "[" + ",".join(map(encoded, value)) + "]"
        case dict():
            return "{" + ",".join(f"{encoded(str(k))}:{encoded(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"not part of a request: {value!r}")


def _gone(path: str) -> ReconcilerError:
    from .errors import ReconcilerError

    return ReconcilerError(
        f"the daemon at {path} went away before it answered (did it stop?); if it was applying, "
        "its journal lets the next apply finish the job: run `reconciler apply` again"
    )
