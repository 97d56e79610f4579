"""`reconciler watch` against the real kernel: a real daemon process inside a sandboxed host.

The daemon follows a directory of specs (files replaced by rename, as git does), repairs drift from
kernel events (the resync timer is set far beyond every deadline here, so a repair can only come
from an event), survives invalid edits, serves metrics, shares the state lock with `apply`, and
stops cleanly. Every wait polls the kernel or the daemon's log with a deadline; nothing is timed.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sandbox import Background, Host

pytestmark = pytest.mark.integration

DEADLINE = 30.0
METRICS = ("127.0.0.1", 9411)
# Far beyond every deadline: what the daemon does here, it does because of an edit or an event.
NO_RESYNC = "3600"
LOCK = "/var/lib/reconciler/lock"

NETWORKS = """\
version: 1
networks:
  front:
    subnet: 10.20.0.0/24
"""
WEB = """\
  web:
    networks: [front]
    ports: ["8080:5000"]
"""


def containers(*bodies: str) -> str:
    return "version: 1\ncontainers:\n" + "".join(bodies)


def db(address: str | None = None, network: str = "front") -> str:
    if address is None:
        return f"  db:\n    networks: [{network}]\n"
    return f"  db:\n    networks:\n      {network}: {{ipv4_address: {address}}}\n"


def replace(path: Path, text: str) -> None:
    """Write by rename, as git checkout and most editors do."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def wait_for(what: str, check: Callable[[], bool], daemon: Background | None = None) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        if time.monotonic() > deadline:
            log = f"\n--- daemon log\n{daemon.output()}" if daemon else ""
            raise AssertionError(f"timed out waiting for {what}{log}")
        time.sleep(0.1)


def log_lines(daemon: Background) -> list[dict[str, Any]]:
    out = []
    # Complete lines only: the daemon may be half-way through writing the last one.
    for line in daemon.output().split("\n")[:-1]:
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def reconciles(daemon: Background, result: str | None = None) -> list[dict[str, Any]]:
    return [
        e
        for e in log_lines(daemon)
        if e["event"] == "reconcile" and (result is None or e["result"] == result)
    ]


def applied_with(daemon: Background, change: str) -> dict[str, Any] | None:
    """The last applied reconcile with a change starting with `change`."""
    found = [e for e in reconciles(daemon, "applied") if any(c.startswith(change) for c in e["changes"])]
    return found[-1] if found else None


def address_in(host: Host, netns: str) -> list[str]:
    out = host.run(["ip", "-j", "-4", "addr", "show", "dev", "eth0"], netns=netns, check=False).stdout
    return [a["local"] for link in json.loads(out or "[]") for a in link.get("addr_info", [])]


def http_get(host: Host, path: str) -> str:
    conn = host.connect(None, METRICS[0], METRICS[1], payload=f"GET {path} HTTP/1.0\r\n\r\n")
    assert conn.ok, f"metrics endpoint: {conn}"
    return conn.data


def metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


@pytest.fixture
def specs(host: Host) -> Path:
    d = host.workdir / "specs"
    d.mkdir()
    (d / "networks.yaml").write_text(NETWORKS)
    (d / "containers.yaml").write_text(containers(WEB))
    return d


def start_watch(host: Host, specs: Path, env: dict[str, str] | None = None) -> Background:
    """The daemon on `specs`, logging JSON lines to watch.log, with metrics and no periodic resync."""
    return start_daemon(host, str(specs), env=env)


def start_daemon(host: Host, *source: str, env: dict[str, str] | None = None) -> Background:
    """`reconciler watch SOURCE...` as `start_watch` runs it (SOURCE: a path, or --git options)."""
    return host.reconciler_background(
        "watch",
        *source,
        "--log-format",
        "json",
        "--resync-interval",
        NO_RESYNC,
        "--metrics-address",
        f"{METRICS[0]}:{METRICS[1]}",
        log=host.workdir / "watch.log",
        env=env,
    )


@pytest.fixture
def daemon(host: Host, specs: Path) -> Iterator[Background]:
    bg = start_watch(host, specs)
    wait_for("the first reconcile", lambda: bool(reconciles(bg, "applied")), bg)
    yield bg


def test_follows_spec_edits(host: Host, specs: Path, daemon: Background) -> None:
    assert host.netns_list() == ["web"]
    app = specs / "containers.yaml"

    replace(app, containers(WEB, db()))
    # Its address, not its name alone: the name is there a moment before the namespace is mounted.
    wait_for(
        "db to be created",
        lambda: host.netns_list() == ["db", "web"] and address_in(host, "db") != [],
        daemon,
    )
    server = host.serve("db", 6379, "pong")
    wait_for("web to reach db by name", lambda: host.connect("web", "db", 6379).data == "pong\n", daemon)
    server.stop()

    replace(app, containers(WEB, db("10.20.0.50")))
    wait_for("db's new address", lambda: address_in(host, "db") == ["10.20.0.50"], daemon)

    replace(app, containers(WEB))
    wait_for("db to be removed", lambda: host.netns_list() == ["web"], daemon)

    def edits() -> list[dict[str, Any]]:
        return [e for e in reconciles(daemon, "applied") if "spec" in e["trigger"]]

    # The log line follows the apply's verification: it can trail the kernel change.
    wait_for("the removal's reconcile", lambda: len(edits()) >= 3, daemon)
    partial = edits()
    assert len(partial) == 3 and {e["mode"] for e in partial} == {"partial"}, partial


def test_an_edit_touches_only_what_it_reaches(host: Host, specs: Path, daemon: Background) -> None:
    """Adding a container to `front` plans only it, from memory: front's members learn its name
    from the resolver, their hosts files stay as they are. A hand edit of the hosts file of `cache` (on
    `back`, which the edit does not reach) is reported by inotify and repaired alone, and a full resync
    (SIGHUP) then finds nothing to do."""
    back = "  back:\n    subnet: 10.21.0.0/24\n"
    replace(specs / "networks.yaml", NETWORKS + back)
    cache = "  cache:\n    networks: [back]\n"
    replace(specs / "containers.yaml", containers(WEB, cache))
    wait_for("cache to be created", lambda: host.netns_list() == ["cache", "web"], daemon)
    wait_for("the edit's reconcile", lambda: applied_with(daemon, "+ netns cache") is not None, daemon)
    hosts = "/etc/netns/cache/hosts"
    ours = host.run(["cat", hosts]).stdout
    host.run(["sh", "-c", f"echo '10.99.0.1 intruder' >> {hosts}"])
    wait_for("the hosts file to be repaired", lambda: host.run(["cat", hosts]).stdout == ours, daemon)
    wait_for("the repair's reconcile", lambda: applied_with(daemon, "~ hosts cache") is not None, daemon)
    repair = applied_with(daemon, "~ hosts cache")
    assert repair is not None and repair["trigger"] == "drift" and repair["mode"] == "partial", repair
    assert [change.split(":")[0] for change in repair["changes"]] == ["~ hosts cache"], repair

    replace(specs / "containers.yaml", containers(WEB, cache, "  api:\n    networks: [front]\n"))
    wait_for("api to be created", lambda: host.netns_list() == ["api", "cache", "web"], daemon)
    # The log line follows the apply's verification: it can trail the kernel change.
    wait_for("the edit's reconcile", lambda: applied_with(daemon, "+ netns api") is not None, daemon)
    edit = applied_with(daemon, "+ netns api")
    assert edit is not None and edit == reconciles(daemon, "applied")[-1], edit
    assert "spec" in edit["trigger"] and edit["mode"] == "partial", edit
    touched = {change.split(":")[0] for change in edit["changes"]}
    assert touched == {
        "+ netns api",
        "+ iface api/front",
        "+ route api",
        "+ hosts api",
    }, edit["changes"]
    assert host.run(["getent", "hosts", "api"], netns="web").stdout.split()[1:] == ["api"]

    daemon.signal(signal.SIGHUP)
    wait_for("the resync", lambda: any("signal" in e["trigger"] for e in reconciles(daemon)), daemon)
    resync = next(e for e in reconciles(daemon) if "signal" in e["trigger"])
    assert resync["mode"] == "full" and resync["result"] == "in_sync", resync


def test_invalid_edit_keeps_state_until_fixed(host: Host, specs: Path, daemon: Background) -> None:
    app = specs / "containers.yaml"
    replace(app, containers(WEB, db()))
    wait_for("db to be created", lambda: host.netns_list() == ["db", "web"], daemon)
    address = address_in(host, "db")

    replace(app, containers(WEB, db(network="frnt")))
    wait_for(
        "the invalid edit to be reported",
        lambda: any(e["event"] == "invalid_spec" for e in log_lines(daemon)),
    )
    problems = next(e["problems"] for e in log_lines(daemon) if e["event"] == "invalid_spec")
    assert problems == [f"{app}:7: containers.db.networks.frnt: unknown network 'frnt'"], problems
    assert host.netns_list() == ["db", "web"] and address_in(host, "db") == address

    # The same container in two files: a conflict naming both.
    replace(app, containers(WEB, db()))
    wait_for("the valid edit", lambda: reconciles(daemon)[-1]["result"] == "in_sync", daemon)
    replace(specs / "more.yaml", containers(db()))
    wait_for("the conflict to be reported", lambda: reconciles(daemon)[-1]["result"] == "invalid", daemon)
    conflict = [e for e in log_lines(daemon) if e["event"] == "invalid_spec"][-1]["problems"]
    assert conflict == [f"{specs / 'more.yaml'}:3: containers.db: is defined twice: also in {app}:6"], (
        conflict
    )

    before = len(reconciles(daemon))
    (specs / "more.yaml").unlink()
    replace(app, containers(WEB, db("10.20.0.60")))
    wait_for("the fix to be applied", lambda: address_in(host, "db") == ["10.20.0.60"], daemon)
    # The log line follows the apply's verification; an echo of the apply may follow it (in_sync).
    wait_for("the fix's reconcile", lambda: applied_with(daemon, "~ iface db") is not None, daemon)
    assert all(e["result"] in ("applied", "in_sync") for e in reconciles(daemon)[before:]), daemon.output()


def test_follows_yml_files(host: Host, specs: Path, daemon: Background) -> None:
    """A `.yml` file is a spec file too: its containers are created, its edits and its removal
    followed, and a name it shares with a `.yaml` file is a conflict, not a silent winner."""
    extra = specs / "db.yml"
    replace(extra, containers(db()))
    wait_for("db from the .yml file", lambda: host.netns_list() == ["db", "web"], daemon)
    replace(extra, containers(db("10.20.0.70")))
    wait_for("db's address from the .yml edit", lambda: address_in(host, "db") == ["10.20.0.70"], daemon)

    replace(specs / "web.yml", containers(WEB))
    wait_for("the conflict to be reported", lambda: reconciles(daemon)[-1]["result"] == "invalid", daemon)
    conflict = [e for e in log_lines(daemon) if e["event"] == "invalid_spec"][-1]["problems"]
    app = specs / "containers.yaml"
    assert conflict == [f"{specs / 'web.yml'}:3: containers.web: is defined twice: also in {app}:3"], conflict
    assert host.netns_list() == ["db", "web"]

    (specs / "web.yml").unlink()
    extra.unlink()
    wait_for("db to go with its file", lambda: host.netns_list() == ["web"], daemon)


def test_repairs_drift_from_events(host: Host, daemon: Background) -> None:
    host.serve("web", 5000, "web")
    veth = host.show()["containers"]["web"]["interfaces"][0]["host_ifname"]
    wait_for("the published port", lambda: host.connect(None, "127.0.0.1", 8080).data == "web\n", daemon)

    # One burst (the sandbox's ruleset: ours is the only table in it), so usually one repair.
    host.run(f"ip link del {veth}; nft flush ruleset")

    wait_for("the veth to come back", lambda: veth in host.links(), daemon)
    wait_for("our table to come back", lambda: "inet netreconciler" in host.nft_tables(), daemon)
    wait_for(
        "the published port again", lambda: host.connect(None, "127.0.0.1", 8080).data == "web\n", daemon
    )
    wait_for("the repair's reconcile", lambda: len(reconciles(daemon, "applied")) > 1, daemon)
    if reconciles(daemon, "rolled_back"):
        # Under load the flush can land during the repair of the veth: that apply fails its
        # verification, its rollback restores the table, and the immediate retry the veth.
        retry = reconciles(daemon, "applied")[-1]
        assert retry["trigger"] == "resync" and retry["mode"] == "full", daemon.output()
        return
    drift = [e for e in reconciles(daemon, "applied") if "drift" in e["trigger"]]
    assert drift and all(e["mode"] == "partial" for e in drift), daemon.output()
    text = http_get(host, "/metrics")
    for kind in ("iface", "nft-table"):
        repaired = metric(text, f'netreconciler_watch_drift_repairs_total{{kind="{kind}"}}')
        assert repaired is not None and repaired >= 1, f"{kind}:\n{text}"


def test_a_drift_repair_plans_only_what_its_hint_names(host: Host, specs: Path) -> None:
    """Five members of `front`: one container's veth deleted is repaired alone (its interface and
    route, nothing of the four others), our table flushed is repaired whole (table and elements), each
    in a partial reconcile; a full resync then finds the host in sync."""
    members = "".join(f'  m{i}:\n    networks: [front]\n    ports: ["{9000 + i}:80"]\n' for i in range(4))
    (specs / "containers.yaml").write_text(containers(WEB, members))
    daemon = start_watch(host, specs)
    wait_for("the first reconcile", lambda: bool(reconciles(daemon, "applied")), daemon)
    veth = next(i["host_ifname"] for i in host.show()["containers"]["m2"]["interfaces"])

    def repair_of(change: str) -> Callable[[], dict[str, Any] | None]:
        done = len(reconciles(daemon))
        return lambda: next(
            (e for e in reconciles(daemon)[done:] if any(change in c for c in e["changes"])), None
        )

    veth_repair = repair_of("iface m2/front")
    host.run(["ip", "link", "del", veth])
    wait_for("the veth's repair", lambda: veth_repair() is not None, daemon)
    repair = veth_repair()
    assert repair is not None and repair["trigger"] == "drift" and repair["mode"] == "partial", repair
    assert repair["result"] == "applied", repair
    named = {c.split(":")[0].split()[2].split("/")[0] for c in repair["changes"]}
    assert named == {"m2"}, repair["changes"]
    table_repair = repair_of("nft-table")
    host.run(["nft", "flush", "ruleset"])
    wait_for("the table's repair", lambda: table_repair() is not None, daemon)
    repair = table_repair()
    assert repair is not None and repair["trigger"] == "drift" and repair["mode"] == "partial", repair
    assert repair["result"] == "applied", repair
    elements = [c for c in repair["changes"] if c.startswith("+ nft-element")]
    assert len([c for c in elements if "ports_addr" in c]) == 5, repair["changes"]
    assert {c.split()[1] for c in repair["changes"]} == {"nft-table", "nft-element"}, repair["changes"]
    for i in range(4):
        host.serve(f"m{i}", 80, f"m{i}")
    for i in range(4):
        conn = host.connect(None, "127.0.0.1", 9000 + i)
        assert conn.ok and conn.data == f"m{i}\n", conn
    daemon.signal(signal.SIGHUP)
    wait_for("the resync", lambda: any("signal" in e["trigger"] for e in reconciles(daemon)), daemon)
    resync = next(e for e in reconciles(daemon) if "signal" in e["trigger"])
    assert resync["mode"] == "full" and resync["result"] == "in_sync", resync


def test_metrics_and_clean_stop(host: Host, specs: Path, daemon: Background) -> None:
    text = http_get(host, "/metrics")
    assert metric(text, 'netreconciler_watch_reconciles_total{result="applied"}') == 1.0, text
    assert metric(text, 'netreconciler_watch_reconcile_duration_seconds_count{mode="full"}') == 1.0, text
    assert metric(text, 'netreconciler_watch_managed_objects{kind="netns"}') == 1.0, text
    assert metric(text, 'netreconciler_watch_managed_objects{kind="bridge"}') == 1.0, text
    last = metric(text, "netreconciler_watch_last_success_timestamp_seconds")
    assert last is not None and abs(last - time.time()) < 600, text
    assert http_get(host, "/healthz").startswith("HTTP/1.0 200"), "healthz"

    # SIGTERM in the middle of a reconcile (the daemon frozen while it holds the lock): the
    # reconcile finishes, then the daemon exits 0, leaving nothing half-applied.
    many = [f"  c{i}:\n    networks: [front]\n" for i in range(20)]
    replace(specs / "containers.yaml", containers(WEB, *many))
    _freeze_holding_lock(host, daemon)
    daemon.signal(signal.SIGTERM)
    daemon.signal(signal.SIGCONT)
    assert daemon.wait(timeout=DEADLINE) == 0, daemon.output()
    assert log_lines(daemon)[-1]["message"].startswith("stopping"), daemon.output()
    assert any("spec" in e["trigger"] for e in reconciles(daemon, "applied")[1:]), daemon.output()
    proc = host.reconciler("apply", str(specs), "--dry-run", "--exit-code")
    assert proc.returncode == 0 and "No changes" in proc.stdout, proc.stdout + proc.stderr
    assert len(host.netns_list()) == 21


def test_apply_waits_for_the_daemon_and_the_daemon_for_apply(
    host: Host, specs: Path, daemon: Background
) -> None:
    app = specs / "containers.yaml"
    # Another run holds the lock: the daemon waits, then applies the edit.
    holder = host.background(
        ["flock", LOCK, "sh", "-c", "echo held; exec sleep 600"], host.workdir / "holder.log"
    )
    wait_for("the lock to be held", lambda: "held" in holder.output())
    replace(app, containers(WEB, db()))
    wait_for("the daemon to wait", lambda: "waiting for another reconciler run" in daemon.output(), daemon)
    assert host.netns_list() == ["web"]
    holder.stop()
    wait_for("db to be created", lambda: host.netns_list() == ["db", "web"], daemon)

    # The daemon holds the lock: apply waits for it, naming it. Catch the daemon inside a long
    # reconcile and freeze it there, so the lock is certainly held while apply starts.
    many = [f"  c{i}:\n    networks: [front]\n" for i in range(20)]
    replace(app, containers(WEB, db(), *many))
    _freeze_holding_lock(host, daemon)
    try:
        # --local: this apply's own run waits for the lock (handed over, the daemon would run it).
        apply = host.reconciler_background("apply", str(specs), "--local", log=host.workdir / "apply.log")
        wait_for("apply to wait", lambda: "waiting for another reconciler run" in apply.output())
        assert ", reconciler watch) to finish" in apply.output(), apply.output()
        assert apply.proc.poll() is None, apply.output()
    finally:
        daemon.signal(signal.SIGCONT)
    assert apply.wait(timeout=DEADLINE) == 0, apply.output()
    wait_for("all containers", lambda: len(host.netns_list()) == 22, daemon)


def _freeze_holding_lock(host: Host, daemon: Background) -> None:
    """SIGSTOP the daemon while it holds the lock; SIGHUP (a full resync) gives it another reconcile
    to be caught in when it slipped away."""
    start = time.monotonic()
    while time.monotonic() < start + DEADLINE:
        if _lock_busy(host):
            daemon.signal(signal.SIGSTOP)
            if _lock_busy(host):
                return
            daemon.signal(signal.SIGCONT)
        if time.monotonic() > start + 2:  # the reconcile that was expected is over: make another
            daemon.signal(signal.SIGHUP)
    raise AssertionError(f"never caught the daemon holding the lock\n{daemon.output()}")


def _lock_busy(host: Host) -> bool:
    return host.run(["flock", "-n", LOCK, "true"], check=False).returncode != 0


def test_refused_reconcile_reports_unhealthy_and_retries(host: Host, specs: Path, daemon: Background) -> None:
    host.run(["ip", "netns", "add", "db"])  # someone else's namespace where db would go
    replace(specs / "containers.yaml", containers(WEB, db()))
    wait_for("the refusal", lambda: reconciles(daemon)[-1]["result"] == "failed", daemon)
    assert "namespace /run/netns/db exists and is not managed by this spec" in reconciles(daemon)[-1]["error"]
    assert http_get(host, "/healthz").startswith("HTTP/1.0 503"), "healthz while failing"
    failures = len(reconciles(daemon, "failed"))

    host.run(["ip", "netns", "del", "db"])
    wait_for(
        "the retry to create db", lambda: "db" in host.netns_list() and address_in(host, "db") != [], daemon
    )
    wait_for("the retry's reconcile", lambda: bool(reconciles(daemon, "applied")[1:]), daemon)
    assert "resync" in reconciles(daemon, "applied")[1]["trigger"], daemon.output()
    assert failures <= 2, reconciles(daemon, "failed")  # retried with a pause, not in a loop
    assert http_get(host, "/healthz").startswith("HTTP/1.0 200"), "healthz after the retry"


def test_failed_reconcile_is_rolled_back_then_retried(host: Host, specs: Path) -> None:
    """The start reconcile (full) fails at its 5th kernel operation (`RECONCILER_FAIL_AFTER` counts
    over the daemon's life, so only that one fails): it is rolled back, counted as rolled_back, and
    retried at once (a first failure while changing the host is most likely a hand change during the
    apply); the retry converges."""
    daemon = start_watch(host, specs, env={"RECONCILER_FAIL_AFTER": "5"})
    wait_for("the first reconcile", lambda: bool(reconciles(daemon)), daemon)
    first = reconciles(daemon)[0]
    assert first["result"] == "rolled_back" and first["mode"] == "full", first
    assert "injected failure after kernel operation 5" in first["error"], first
    assert "rolled back: the host is as it was before this apply" in first["error"], first

    wait_for("the retry", lambda: bool(reconciles(daemon, "applied")), daemon)
    retry = reconciles(daemon)[1]
    # The rollback's own events wait for the retry (they may join its trigger), never start one.
    assert retry["result"] == "applied" and "resync" in retry["trigger"] and retry["mode"] == "full", retry
    assert host.netns_list() == ["web"]
    text = http_get(host, "/metrics")
    assert metric(text, 'netreconciler_watch_reconciles_total{result="rolled_back"}') == 1.0, text
    assert http_get(host, "/healthz").startswith("HTTP/1.0 200"), "healthz after the retry"
    proc = host.reconciler("apply", str(specs), "--dry-run", "--exit-code", "--local")  # the host, read
    assert proc.returncode == 0 and "No changes" in proc.stdout, proc.stdout + proc.stderr
