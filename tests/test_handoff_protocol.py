"""The hand-over protocol between `reconciler apply` (client.py) and the daemon's socket
(watch/handoff.py), over a real unix socket in a temporary state directory: what the daemon's loop
answers is printed as is, a declined request or a missing daemon means a local apply, another
protocol version is declined, a daemon gone mid-request is an error naming its socket. The loop
itself (planning, applying) is tested against the kernel in tests/integration/test_handoff.py."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import client
from reconciler.errors import ReconcilerError
from reconciler.watch import handoff

Serve = Callable[[Callable[[handoff.Request], None]], list[handoff.Request]]
SPEC = "version: 1\nnetworks:\n  front:\n    subnet: 10.20.0.0/24\n"
REPO = Path(__file__).resolve().parent.parent
# What the command may import beyond an interpreter's own start to hand an apply over (entry.py).
LEAN = {
    "reconciler",
    "reconciler.entry",
    "reconciler.guard",
    "reconciler.client",
    "reconciler.specfiles",
    "_json",
    "_socket",
}
LEAN |= {"types", "__future__"}
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=20,
)


def args(state_dir: Path, spec: Path, **options: object) -> argparse.Namespace:
    defaults = {
        "dry_run": False,
        "exit_code": False,
        "output": "text",
        "host": None,
        "no_rollback": False,
        "key_file": "/etc/netreconciler/wireguard.key",
        "advertise": None,
    }
    return argparse.Namespace(spec=str(spec), state_dir=str(state_dir), **{**defaults, **options})


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    return path


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """A daemon's socket whose loop runs `answer` on each request; the requests it got."""
    servers: list[handoff.Server] = []

    def start(answer: Callable[[handoff.Request], None]) -> list[handoff.Request]:
        got: list[handoff.Request] = []

        def loop(request: handoff.Request) -> None:
            got.append(request)
            assert request.take()
            threading.Thread(target=answer, args=(request,)).start()

        server = handoff.Server(tmp_path / "state", loop)
        server.start()
        servers.append(server)
        return got

    yield start
    for server in servers:
        server.close()


def test_the_answer_is_printed_with_its_exit_code(
    tmp_path: Path, spec: Path, serve: Serve, capsys: pytest.CaptureFixture[str]
) -> None:
    got = serve(lambda r: r.done("  + netns db\nPlan: 1 to add\n", "warning: w\n", 2))
    code = client.hand_over(args(tmp_path / "state", spec, dry_run=True, exit_code=True, output="json"))
    assert code == 2
    out, err = capsys.readouterr()
    assert out == "  + netns db\nPlan: 1 to add\n" and err == "warning: w\n"
    (request,) = got
    assert request.files == [(None, SPEC)] and request.spec == str(spec) and not request.directory
    assert request.dry_run and request.exit_code and request.output == "json" and request.rollback
    folder = tmp_path / "state" / "watch" / "socket"
    assert folder.stat().st_mode & 0o777 == 0o700
    assert (folder / "apply.sock").stat().st_mode & 0o777 == 0o600


def test_a_directory_is_sent_as_its_spec_files(tmp_path: Path, serve: Serve) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "b.yml").write_text("version: 1\n")
    (specs / "a.yaml").write_text(SPEC)
    (specs / ".a.yaml.swp").write_text("an editor's")
    (specs / "notes.txt").write_text("not a spec")
    got = serve(lambda r: r.done("", "", 0))
    assert client.hand_over(args(tmp_path / "state", specs)) == 0
    assert got[0].directory and got[0].files == [("a.yaml", SPEC), ("b.yml", "version: 1\n")]


def test_declined_or_no_daemon_means_a_local_apply(tmp_path: Path, spec: Path, serve: Serve) -> None:
    assert client.hand_over(args(tmp_path / "state", spec)) is None  # no socket at all
    serve(lambda r: r.local("the daemon manages scope other"))
    assert client.hand_over(args(tmp_path / "state", spec)) is None
    # What a local load must report is not handed over: not UTF-8, missing.
    (tmp_path / "bad.yaml").write_bytes(b"version: 1\n\xff\n")
    assert client.hand_over(args(tmp_path / "state", tmp_path / "bad.yaml")) is None
    assert client.hand_over(args(tmp_path / "state", tmp_path / "missing.yaml")) is None


def test_another_protocol_version_is_declined(tmp_path: Path, serve: Serve) -> None:
    got = serve(lambda r: r.done("", "", 0))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(client.socket_path(str(tmp_path / "state")))
        sock.sendall(json.dumps({"protocol": client.PROTOCOL + 1}).encode() + b"\n")
        answer = json.loads(sock.makefile("rb").readline())
    assert answer["state"] == "local" and "protocol" in answer["reason"], answer
    assert got == []


def test_a_daemon_gone_mid_request_is_an_error_naming_its_socket(tmp_path: Path, spec: Path) -> None:
    path = client.socket_path(str(tmp_path / "state"))
    os.makedirs(os.path.dirname(path))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def read_then_die() -> None:
        conn, _ = listener.accept()
        conn.makefile("rb").readline()
        conn.close()

    threading.Thread(target=read_then_die).start()
    with pytest.raises(ReconcilerError, match=f"the daemon at {path} went away before it answered"):
        client.hand_over(args(tmp_path / "state", spec))
    listener.close()


def request_line(spec: Path) -> bytes:
    a = args(spec.parent / "state", spec)
    files = client.read_files(str(spec))
    body = {"protocol": client.PROTOCOL, "spec": str(spec), "cwd": "/", "directory": False, "files": files}
    body |= {k: getattr(a, k) for k in ("dry_run", "exit_code", "output", "host", "key_file", "advertise")}
    body |= {"colour": False, "rollback": True}
    return client.encoded(body).encode() + b"\n"


def test_an_answer_larger_than_the_socket_takes_never_holds_the_loop(tmp_path: Path, spec: Path) -> None:
    """The loop sends its answer itself; what a client not reading yet leaves in the way goes from the
    socket's thread, whole and in order, once the client reads."""
    requests: list[handoff.Request] = []
    taken = threading.Event()

    def loop(request: handoff.Request) -> None:
        assert request.take()
        requests.append(request)
        taken.set()

    server = handoff.Server(tmp_path / "state", loop)
    server.start()
    big = "".join(f"  + nft-element inet netreconciler ports_addr: tcp . {i}\n" for i in range(100_000))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(server.path))
        sock.sendall(request_line(spec))
        assert taken.wait(30)
        answering = threading.Thread(target=requests[0].done, args=(big, "", 0))
        answering.start()
        answering.join(30)  # the client reads nothing meanwhile
        assert not answering.is_alive()
        lines = sock.makefile("rb").read().splitlines()
    server.close()
    answer = json.loads(lines[-1])
    assert answer == {"state": "done", "stdout": big, "stderr": "", "exit": 0}
    assert all(json.loads(line) == {"state": "wait"} for line in lines[:-1])


def test_a_request_the_loop_does_not_take_gets_heartbeats_then_busy(
    tmp_path: Path, spec: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handoff, "HEARTBEAT", 0.05)
    monkeypatch.setattr(handoff, "START_WAIT", 0.5)
    queued: list[handoff.Request] = []
    server = handoff.Server(tmp_path / "state", queued.append)  # a loop busy for ever
    server.start()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(server.path))
        sock.settimeout(30)
        sock.sendall(request_line(spec))
        lines = sock.makefile("rb").read().splitlines()
    server.close()
    *beats, last = [json.loads(line) for line in lines]
    assert beats and all(b == {"state": "wait"} for b in beats), lines
    assert last["state"] == "busy" and "did not start this apply within 0.5 s" in last["reason"], last
    (request,) = queued
    assert not request.take()  # cancelled: the loop, once free, does not run it


def test_requests_are_read_whatever_order_their_clients_send_in(
    tmp_path: Path, spec: Path, serve: Serve
) -> None:
    """One thread reads every connection: a client that sends its request slowly (or not yet) does
    not hold up another's."""
    got = serve(lambda r: r.done(r.spec, "", 0))
    line = request_line(spec)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as slow:
        slow.connect(client.socket_path(str(tmp_path / "state")))
        slow.sendall(line[:10])
        code = client.hand_over(args(tmp_path / "state", spec))
        assert code == 0 and len(got) == 1
        slow.sendall(line[10:])
        answer = [json.loads(x) for x in slow.makefile("rb").read().splitlines()][-1]
    assert answer["stdout"] == str(spec) and len(got) == 2


def imported(
    *argv: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """A fresh interpreter's run of argv, and the modules it imported (`-X importtime`)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *argv], capture_output=True, text=True, timeout=60, env=env
    )
    lines = [
        line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")
    ]
    return proc, set(lines[1:])  # the first line is the header


def test_a_handed_apply_imports_only_the_client(tmp_path: Path, spec: Path, serve: Serve) -> None:
    serve(lambda r: r.done("No changes.\n", "", 0))
    env = dict(os.environ, RECONCILER_STATE_DIR=str(tmp_path / "state"))
    proc, loaded = imported(str(REPO / "bin" / "reconciler"), "apply", str(spec), "--dry-run", env=env)
    assert proc.returncode == 0 and proc.stdout == "No changes.\n", proc.stdout + proc.stderr
    _, start = imported("-c", "pass")
    assert "reconciler.client" in loaded
    assert loaded - start <= LEAN, loaded - start - LEAN


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_the_client_writes_and_reads_json_as_the_json_module(value: Any) -> None:
    assert json.loads(client.encoded(value)) == value
    assert client.decoded(json.dumps({"state": "done", "value": value}).encode()) == {
        "state": "done",
        "value": value,
    }


def test_an_unreadable_answer_is_none() -> None:
    for line in (b"", b"not json", b"[1]", b'{"state": "done"} x', b'{"state": ', b"\xff"):
        assert client.decoded(line) is None, line
