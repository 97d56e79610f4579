"""`reconciler apply` handed to a running `reconciler watch` (client.py, watch/handoff.py), against the
real kernel in a sandbox: the same plan text, JSON, errors and exit codes as a local apply, the host
changed and verified, a fallback to a local apply without a daemon, and a clear error when the
daemon dies holding a request. Every wait polls with a deadline; nothing is timed.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sandbox import REPO, Background, Host, SandboxError
from test_watch import NETWORKS, WEB, containers, db, log_lines, reconciles, start_watch, wait_for

pytestmark = pytest.mark.integration

SOCKET = "/var/lib/reconciler/watch/socket/apply.sock"


@pytest.fixture
def specs(host: Host) -> Path:
    d = host.workdir / "specs"
    d.mkdir()
    (d / "networks.yaml").write_text(NETWORKS)
    (d / "containers.yaml").write_text(containers(WEB))
    return d


@pytest.fixture
def daemon(host: Host, specs: Path) -> Iterator[Background]:
    bg = start_watch(host, specs)
    wait_for("the first reconcile", lambda: bool(reconciles(bg, "applied")), bg)
    wait_for("the socket", lambda: _listens(host), bg)
    yield bg


def handed(daemon: Background) -> list[str]:
    """The daemon's log messages about the applies it was handed."""
    return [e["message"] for e in log_lines(daemon) if e.get("message", "").startswith("handed over:")]


def both(host: Host, daemon: Background, *args: str) -> tuple[Any, Any]:
    """The same apply handed to the daemon, then run locally: (stdout, stderr, exit code) of each."""
    before = len(handed(daemon))
    via = host.reconciler("apply", *args, env={"NO_COLOR": "1"})
    assert len(handed(daemon)) == before + 1, daemon.output()
    local = host.reconciler("apply", *args, "--local", env={"NO_COLOR": "1"})
    return (via.stdout, via.stderr, via.returncode), (local.stdout, local.stderr, local.returncode)


def test_a_handed_apply_prints_and_exits_as_a_local_one(host: Host, specs: Path, daemon: Background) -> None:
    plus = host.write_spec(NETWORKS + containers(WEB, db()).removeprefix("version: 1\n"), "plus.yaml")
    for options in ([], ["-o", "json"], ["--exit-code"]):
        via, local = both(host, daemon, str(plus), "--dry-run", *options)
        assert via == local, (options, via, local)
    via, _ = both(host, daemon, str(plus), "--dry-run", "--exit-code")
    assert via[2] == 2 and "+ netns db: /run/netns/db" in via[0], via
    assert host.netns_list() == ["web"]  # dry runs, both ways

    # Applied by the daemon, verified, and the host complete: a local dry run finds nothing to do.
    proc = host.reconciler("apply", str(plus), "-o", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["applied"] is True and result["summary"]["add"] > 0, result
    assert handed(daemon)[-1] == f"handed over: apply {plus}", daemon.output()
    assert any(e["trigger"] == "apply" for e in reconciles(daemon, "applied")), daemon.output()
    assert host.netns_list() == ["db", "web"]
    again = host.reconciler("apply", str(plus), "--dry-run", "--exit-code", "--local")
    assert again.returncode == 0 and "No changes" in again.stdout, again.stdout + again.stderr
    via, local = both(host, daemon, str(plus), "--exit-code")
    assert via == local and via[2] == 0 and "No changes" in via[0], (via, local)

    # The daemon follows the handed spec now: drift is repaired towards it.
    host.run(["ip", "netns", "del", "db"])
    wait_for("db repaired", lambda: host.netns_list() == ["db", "web"], daemon)


@pytest.mark.parametrize("module", ["reconciler.entry", "reconciler.cli"])
def test_a_handed_apply_loads_neither_pydantic_nor_yaml_nor_netlink(
    host: Host, specs: Path, daemon: Background, module: str
) -> None:
    """The command's entry (the console script's and `python -m reconciler`'s) loads neither the CLI
    nor argparse; the CLI itself (which an abbreviated option goes through) none of the heavy modules."""
    code = (
        "import sys\n"
        f"from {module} import main\n"
        f"rc = main(['apply', {str(specs)!r}, '--dry-run'])\n"
        "print(rc, ' '.join(sys.modules), file=sys.stderr)\n"
    )
    proc = host.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(REPO)))
    rc, *loaded = proc.stderr.split()
    assert rc == "0" and "No changes" in proc.stdout, proc.stdout + proc.stderr
    assert handed(daemon)[-1] == f"handed over: apply {specs} --dry-run", daemon.output()
    assert "reconciler.client" in loaded
    for heavy in ("pydantic", "yaml", "reconciler.rtnl", "reconciler.spec", "reconciler.engine"):
        assert heavy not in loaded, heavy
    if module == "reconciler.entry":
        for heavy in ("argparse", "reconciler.cli", "reconciler.errors", "json", "socket", "re"):
            assert heavy not in loaded, heavy


def test_a_bad_spec_is_located_and_changes_nothing(host: Host, specs: Path, daemon: Background) -> None:
    bad = host.write_spec(NETWORKS + "containers:\n  db:\n    networks: [nowhere]\n", "bad.yaml")
    via, local = both(host, daemon, str(bad))
    assert via == local, (via, local)
    assert via[2] == 1 and via[1].startswith(f"{bad}:"), via
    assert "networks" in via[1] and "Traceback" not in via[1], via
    # An edit that breaks one container of a spec the daemon parsed before (its other parts reused).
    good = NETWORKS + containers(WEB, db()).removeprefix("version: 1\n")
    edited = host.write_spec(good, "edited.yaml")
    assert both(host, daemon, str(edited), "--dry-run")[0][2] == 0
    edited.write_text(good.replace('"8080:5000"', '"8080:99999"'))
    via, local = both(host, daemon, str(edited))
    assert via == local and via[2] == 1, (via, local)
    assert f"{edited}:8: containers.web.ports.0: invalid port mapping" in via[1], via
    assert handed(daemon)[-1].endswith("invalid, nothing changed"), daemon.output()
    assert host.netns_list() == ["web"]
    # The daemon keeps its spec: an edit of its own files is applied as before.
    (specs / "containers.yaml").write_text(containers(WEB, db()))
    wait_for("db from the daemon's files", lambda: host.netns_list() == ["db", "web"], daemon)


def test_a_directory_is_handed_over_whole(host: Host, specs: Path, daemon: Background) -> None:
    via, local = both(host, daemon, str(specs), "--dry-run", "-o", "json")
    assert via == local and json.loads(via[0])["actions"] == [], via


def test_another_scope_is_applied_locally(host: Host, specs: Path, daemon: Background) -> None:
    other = host.write_spec(
        "version: 1\nname: other\nnetworks:\n  back:\n    subnet: 10.30.0.0/24\n"
        "containers:\n  cache:\n    networks: [back]\n",
        "other.yaml",
    )
    proc = host.reconciler("apply", str(other))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "left to the client (the daemon manages scope default)" in handed(daemon)[-1], daemon.output()
    assert host.netns_list() == ["cache", "web"]


def test_without_a_daemon_apply_is_local(host: Host, specs: Path, daemon: Background) -> None:
    # A clean stop removes the socket; a killed daemon leaves it, refusing connections.
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0, daemon.output()
    assert host.run(["test", "-e", SOCKET], check=False).returncode != 0
    plus = host.write_spec(NETWORKS + containers(WEB, db()).removeprefix("version: 1\n"), "plus.yaml")
    proc = host.reconciler("apply", str(plus))
    assert proc.returncode == 0 and "+ netns db" in proc.stdout, proc.stdout + proc.stderr
    assert host.netns_list() == ["db", "web"]

    second = start_watch(host, specs)
    wait_for("the second daemon's socket", lambda: _listens(host), second)
    wait_for("db removed by the daemon", lambda: host.netns_list() == ["web"], second)
    os.kill(second.pid, signal.SIGKILL)
    second.wait(timeout=30)
    assert _listens(host)  # left behind
    proc = host.reconciler("apply", str(plus), "--exit-code")
    assert proc.returncode == 2 and "+ netns db" in proc.stdout, proc.stdout + proc.stderr
    assert host.netns_list() == ["db", "web"]


def test_the_daemon_gone_mid_request_is_an_error(host: Host, specs: Path, daemon: Background) -> None:
    """The daemon frozen (SIGSTOP) holds the connection: the request waits in its socket; killed, it
    never ran the request. The client says so, naming the socket, and nothing changed; the next
    apply, with no daemon left, applies locally."""
    plus = host.write_spec(NETWORKS + containers(WEB, db()).removeprefix("version: 1\n"), "plus.yaml")
    daemon.signal(signal.SIGSTOP)
    try:
        client = host.reconciler_background("apply", str(plus), log=host.workdir / "client.log")
        wait_for("the client to wait for its answer", lambda: _waits_on_a_socket(client))
    finally:
        os.kill(daemon.pid, signal.SIGKILL)
        daemon.signal(signal.SIGCONT)
    assert client.wait(timeout=30) == 1, client.output()
    assert f"error: the daemon at {SOCKET} went away before it answered" in client.output(), client.output()
    assert host.netns_list() == ["web"]
    proc = host.reconciler("apply", str(plus))
    assert proc.returncode == 0 and "+ netns db" in proc.stdout, proc.stdout + proc.stderr
    assert host.netns_list() == ["db", "web"]


def _waits_on_a_socket(client: Background) -> bool:
    """The client sleeps reading a unix socket (its request sent, the answer awaited)."""
    try:
        # A socket with a timeout is read after poll(): the request was sent (connect and send to a
        # listening unix socket do not sleep), the answer is awaited.
        wchan = Path(f"/proc/{client.pid}/wchan").read_text()
        return "poll" in wchan or wchan.startswith("unix_stream_read")
    except (SandboxError, OSError):  # not started yet
        assert client.proc.poll() is None, client.output()
        return False


def _listens(host: Host) -> bool:
    """The daemon's socket exists (a killed daemon's is left behind)."""
    return host.run(["test", "-S", SOCKET], check=False).returncode == 0


def _daemon_with(host: Host, specs: Path, env: dict[str, str]) -> Background:
    """The daemon over a host already in sync (its start reconcile changes nothing: no kernel
    operation counted before the handed apply's)."""
    host.reconciler("apply", str(specs), "--local", check=True)
    bg = start_watch(host, specs, env=env)
    wait_for("the first reconcile", lambda: bool(reconciles(bg, "in_sync")), bg)
    wait_for("the socket", lambda: _listens(host), bg)
    return bg


def test_a_failed_handed_apply_is_rolled_back_then_resynced(host: Host, specs: Path) -> None:
    daemon = _daemon_with(host, specs, {"RECONCILER_FAIL_AFTER": "3"})
    plus = host.write_spec(NETWORKS + containers(WEB, db()).removeprefix("version: 1\n"), "plus.yaml")
    proc = host.reconciler("apply", str(plus))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    failed = "error: apply failed: injected failure after kernel operation 3"
    assert proc.stderr.startswith(failed), proc.stderr
    assert "rolled back: the host is as it was before this apply" in proc.stderr, proc.stderr
    assert host.netns_list() == ["web"]
    # The daemon dropped its memory: a full reconcile of its own spec follows at once.
    wait_for("the full reconcile", lambda: any("resync" in e["trigger"] for e in reconciles(daemon)), daemon)
    assert reconciles(daemon)[-1]["mode"] == "full", daemon.output()
    again = host.reconciler("apply", str(specs), "--dry-run", "--exit-code", "--local")
    assert again.returncode == 0, again.stdout + again.stderr


def test_the_daemon_killed_mid_apply_leaves_what_the_next_apply_finishes(host: Host, specs: Path) -> None:
    """SIGKILL at the handed apply's third kernel operation: the client says the daemon went away;
    the intent journal lets the next apply (local: no daemon listens) remove what was half made and
    converge."""
    daemon = _daemon_with(host, specs, {"RECONCILER_FAULT_AFTER": "3"})
    plus = host.write_spec(NETWORKS + containers(WEB, db()).removeprefix("version: 1\n"), "plus.yaml")
    proc = host.reconciler("apply", str(plus))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"error: the daemon at {SOCKET} went away before it answered" in proc.stderr, proc.stderr
    assert daemon.wait(timeout=30) != 0
    proc = host.reconciler("apply", str(plus))
    # It finishes what the daemon began (db's namespace was made and marked before the kill).
    assert proc.returncode == 0 and "+ iface db/front" in proc.stdout, proc.stdout + proc.stderr
    assert host.netns_list() == ["db", "web"]
    again = host.reconciler("apply", str(plus), "--dry-run", "--exit-code")
    assert again.returncode == 0 and "No changes" in again.stdout, again.stdout + again.stderr


def test_a_suspended_daemon_leaves_apply_to_the_client(host: Host, specs: Path, daemon: Background) -> None:
    assert host.reconciler("suspend", "--all").returncode == 0
    plus = host.write_spec(NETWORKS + containers(WEB, db()).removeprefix("version: 1\n"), "plus.yaml")
    proc = host.reconciler("apply", str(plus))
    assert proc.returncode == 0 and "+ netns db" in proc.stdout, proc.stdout + proc.stderr
    assert handed(daemon)[-1].endswith("left to the client (the daemon is suspended)"), daemon.output()
    assert host.netns_list() == ["db", "web"]
