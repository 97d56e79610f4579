"""`reconciler watch --git` against the real kernel: a daemon inside a sandboxed host follows a local
bare repository (a `file://` remote in the test's directory), fetching every second.

Commits pushed are applied; a commit that is invalid, fails to apply or is not signed by an allowed
key is reported with its revision and the last good revision stays (traffic still flows); `status`,
the metrics and the JSON log name the revisions; suspend and resume hold and release new revisions;
an unreachable remote is a reported degraded state that tears nothing down. Every wait polls the
kernel, the status file or the log with a deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sandbox import Background, Host
from test_watch import (
    NETWORKS,
    WEB,
    containers,
    db,
    http_get,
    log_lines,
    reconciles,
    replace,
    start_daemon,
    start_watch,
    wait_for,
)

pytestmark = pytest.mark.integration

# A git that reads no configuration of this machine's users.
GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.org",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.org",
}


class Repo:
    """A bare repository (the remote) and a working clone that commits and pushes to it."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "remote.git"
        self.work = root / "work"
        root.mkdir()
        self._git(root, "init", "--quiet", "--bare", "--initial-branch=main", str(self.bare))
        self._git(root, "init", "--quiet", "--initial-branch=main", str(self.work))

    @property
    def url(self) -> str:
        return f"file://{self.bare}"

    def commit(self, files: dict[str, str], *signing: str) -> str:
        """Write `files` (under specs/), commit (`signing`: extra `git commit` options) and push;
        the new commit's sha."""
        for name, text in files.items():
            path = self.work / "specs" / name
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
        self._git(self.work, "add", "-A")
        self._git(self.work, *signing, "commit", "--quiet", "-m", f"change {sorted(files)}")
        self._git(self.work, "push", "--quiet", self.url, "HEAD:refs/heads/main")
        return self._git(self.work, "rev-parse", "HEAD").strip()

    def _git(self, cwd: Path, *args: str) -> str:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, check=False, timeout=60
        )
        assert proc.returncode == 0, f"git {args}: {proc.stderr}"
        return proc.stdout


def revision(sha: str) -> str:
    return f"main@sha1:{sha}"


def start_gitops(host: Host, repo: Repo, *extra: str, interval: str = "1s") -> Background:
    return start_daemon(host, "--git", repo.url, "--path", "specs", "--interval", interval, *extra)


def status(host: Host) -> dict[str, Any]:
    proc = host.reconciler("status", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def scope(host: Host) -> dict[str, Any]:
    """The status of the spec's scope (the specs here have no `name:`: the default scope)."""
    scopes = status(host)["scopes"]
    return scopes.get("default", {})


def applied(host: Host, sha: str) -> bool:
    return scope(host).get("applied_revision") == revision(sha)


def attempted(host: Host, sha: str, result: str) -> bool:
    entry = scope(host)
    return entry.get("attempted_revision") == revision(sha) and entry.get("result") == result


def web_reaches_db(host: Host) -> bool:
    return host.connect("web", "db", 6379).data == "pong\n"


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path / "git")


@pytest.fixture
def first(repo: Repo) -> str:
    return repo.commit({"networks.yaml": NETWORKS, "containers.yaml": containers(WEB, db())})


def test_commits_are_applied_and_a_bad_one_keeps_the_last_good(host: Host, repo: Repo, first: str) -> None:
    daemon = start_gitops(host, repo)
    wait_for("the first commit", lambda: applied(host, first), daemon)
    assert host.netns_list() == ["db", "web"]
    server = host.serve("db", 6379, "pong")
    wait_for("web to reach db", lambda: web_reaches_db(host), daemon)
    info = f'reconciler_applied_revision_info{{revision="{revision(first)}",scope="default"}} 1.0'
    assert info in http_get(host, "/metrics")

    second = repo.commit({"containers.yaml": containers(WEB, db(), "  api:\n    networks: [front]\n")})
    wait_for("the second commit", lambda: applied(host, second), daemon)
    assert host.netns_list() == ["api", "db", "web"]
    entry = scope(host)
    assert entry["attempted_revision"] == revision(second) and entry["error"] is None, entry

    bad = repo.commit({"containers.yaml": containers(WEB, db(network="frnt"))})
    wait_for("the bad commit to be reported", lambda: attempted(host, bad, "invalid"), daemon)
    entry = scope(host)
    assert entry["applied_revision"] == revision(second), entry
    assert entry["error"] == "specs/containers.yaml:7: containers.db.networks.frnt: unknown network 'frnt'"
    assert host.netns_list() == ["api", "db", "web"] and web_reaches_db(host)
    # Drift is repaired with the last good revision; the bad one stays the attempted one.
    veth = host.show()["containers"]["web"]["interfaces"][0]["host_ifname"]
    host.run(["ip", "link", "del", veth])
    wait_for("the veth to be repaired", lambda: veth in host.links(), daemon)
    wait_for("the repair's time", lambda: bool(scope(host).get("last_drift_repair")), daemon)
    assert attempted(host, bad, "invalid") and applied(host, second), scope(host)
    invalid = [e for e in log_lines(daemon) if e["event"] == "reconcile" and e["result"] == "invalid"]
    assert invalid[-1]["revision"] == revision(bad), invalid
    text = http_get(host, "/metrics")
    assert f'reconciler_applied_revision_info{{revision="{revision(second)}",scope="default"}} 1.0' in text
    assert f'revision="{revision(first)}"' not in text, text  # one applied revision per scope
    assert (
        f'reconciler_attempted_revision_info{{result="invalid",revision="{revision(bad)}",'
        'scope="default"} 1.0' in text
    ), text

    fixed = repo.commit({"containers.yaml": containers(WEB, db())})
    wait_for("the fix", lambda: applied(host, fixed), daemon)
    wait_for("api to go", lambda: host.netns_list() == ["db", "web"], daemon)
    assert web_reaches_db(host) and scope(host)["error"] is None
    server.stop()
    applies = [e for e in log_lines(daemon) if e["event"] == "reconcile" and e["result"] == "applied"]
    assert {e["revision"] for e in applies} == {revision(first), revision(second), revision(fixed)}, applies


def test_a_failing_apply_keeps_the_last_good_revision(host: Host, repo: Repo, first: str) -> None:
    daemon = start_gitops(host, repo)
    wait_for("the first commit", lambda: applied(host, first), daemon)
    host.run(["ip", "netns", "add", "cache"])  # someone else's namespace where cache would go
    refused = repo.commit({"containers.yaml": containers(WEB, db(), "  cache:\n    networks: [front]\n")})
    wait_for("the failed apply", lambda: attempted(host, refused, "failed"), daemon)
    entry = scope(host)
    assert entry["applied_revision"] == revision(first), entry
    assert "namespace /run/netns/cache exists and is not managed by this spec" in entry["error"], entry
    server = host.serve("db", 6379, "pong")
    assert web_reaches_db(host)
    server.stop()

    good = repo.commit({"containers.yaml": containers(WEB, db(), "  api:\n    networks: [front]\n")})
    # The failed revision is retried with a backoff; the next good commit replaces it.
    wait_for("the next good commit", lambda: applied(host, good), daemon)
    assert host.netns_list() == ["api", "cache", "db", "web"]


def _ssh_key(root: Path, name: str) -> Path:
    key = root / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key


def _signed(key: Path) -> tuple[str, ...]:
    return ("-c", "gpg.format=ssh", "-c", f"user.signingkey={key}.pub", "-c", "commit.gpgsign=true")


def test_only_commits_signed_by_an_allowed_key_are_applied(host: Host, repo: Repo, tmp_path: Path) -> None:
    if shutil.which("ssh-keygen") is None:
        pytest.skip("needs ssh-keygen (openssh-client)")
    allowed, stranger = _ssh_key(tmp_path, "allowed"), _ssh_key(tmp_path, "stranger")
    signers = tmp_path / "allowed_signers"
    signers.write_text(f'test@example.org namespaces="git" {Path(f"{allowed}.pub").read_text()}')
    first = repo.commit({"networks.yaml": NETWORKS, "containers.yaml": containers(WEB)}, *_signed(allowed))
    daemon = start_gitops(host, repo, "--verify-signatures", str(signers))
    wait_for("the signed commit", lambda: applied(host, first), daemon)

    unsigned = repo.commit({"containers.yaml": containers(WEB, db())})
    wait_for("the unsigned commit to be refused", lambda: attempted(host, unsigned, "refused"), daemon)
    entry = scope(host)
    assert entry["applied_revision"] == revision(first), entry
    assert f"commit {unsigned} is not signed by an allowed key" in entry["error"], entry
    assert host.netns_list() == ["web"]

    foreign = repo.commit({"containers.yaml": containers(WEB, db("10.20.0.50"))}, *_signed(stranger))
    wait_for("the stranger's commit to be refused", lambda: attempted(host, foreign, "refused"), daemon)
    assert host.netns_list() == ["web"] and applied(host, first)
    refusals = [e for e in log_lines(daemon) if e["event"] == "refused_revision"]
    assert [e["revision"] for e in refusals] == [revision(unsigned), revision(foreign)], refusals

    good = repo.commit({"containers.yaml": containers(WEB, db())}, *_signed(allowed))
    wait_for("the next signed commit", lambda: applied(host, good), daemon)
    assert host.netns_list() == ["db", "web"]


def _fetched(host: Host) -> float:
    fetch = status(host).get("fetch") or {}
    return float(fetch.get("last_success") or 0)


def _fetches(host: Host, daemon: Background, n: int) -> None:
    """Wait until the daemon has fetched `n` more times (each one a pass that could apply)."""
    for _ in range(n):
        seen = _fetched(host)
        wait_for("another fetch", lambda s=seen: _fetched(host) > s, daemon)  # type: ignore[misc]


def test_suspend_holds_new_revisions_and_resume_applies_them(host: Host, repo: Repo, first: str) -> None:
    daemon = start_gitops(host, repo)
    wait_for("the first commit", lambda: applied(host, first), daemon)
    proc = host.reconciler("suspend")
    assert proc.returncode == 0 and "suspended (revisions)" in proc.stdout, proc.stdout + proc.stderr
    assert status(host)["suspended"] == "revisions"

    held = repo.commit({"containers.yaml": containers(WEB)})
    wait_for(
        "the held commit to be fetched", lambda: status(host)["fetch"]["revision"] == revision(held), daemon
    )
    wait_for("the hold to be logged", lambda: f"suspended: holding {revision(held)} until" in daemon.output())
    _fetches(host, daemon, 2)
    assert host.netns_list() == ["db", "web"] and applied(host, first)
    # Drift repair goes on while suspended.
    veth = host.show()["containers"]["web"]["interfaces"][0]["host_ifname"]
    host.run(["ip", "link", "del", veth])
    wait_for("the veth to be repaired while suspended", lambda: veth in host.links(), daemon)
    wait_for("the repair's time", lambda: bool(scope(host).get("last_drift_repair")), daemon)

    proc = host.reconciler("suspend", "--all")
    assert proc.returncode == 0 and status(host)["suspended"] == "all", proc.stdout + proc.stderr
    text = http_get(host, "/metrics")
    assert 'netreconciler_watch_suspended{level="all"} 1.0' in text, text
    host.run(["ip", "link", "del", veth])
    _fetches(host, daemon, 2)
    assert veth not in host.links(), "repaired although suspended with --all"

    proc = host.reconciler("resume")
    assert proc.returncode == 0 and "resumed" in proc.stdout, proc.stdout + proc.stderr
    wait_for("the held commit", lambda: applied(host, held), daemon)
    wait_for("db to go", lambda: host.netns_list() == ["web"], daemon)
    wait_for("the veth back after resume", lambda: veth in host.links(), daemon)
    assert status(host)["suspended"] is None


def test_sync_fetches_and_applies_now(host: Host, repo: Repo, first: str) -> None:
    daemon = start_gitops(host, repo, interval="1h")
    wait_for("the first commit", lambda: applied(host, first), daemon)
    second = repo.commit({"containers.yaml": containers(WEB)})
    proc = host.reconciler("sync", "--timeout", "60")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"applied revision:   {revision(second)}" in proc.stdout, proc.stdout
    assert host.netns_list() == ["web"]
    text = host.reconciler("status").stdout
    assert "daemon: running" in text and f"attempted revision: {revision(second)} (" in text, text

    second_daemon = host.reconciler("watch", "--git", repo.url, "--path", "specs")
    assert second_daemon.returncode == 1, second_daemon.stdout + second_daemon.stderr
    assert "another reconciler watch (pid " in second_daemon.stderr, second_daemon.stderr

    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0, daemon.output()
    text = host.reconciler("status").stdout
    assert "daemon: not running" in text and revision(second) in text, text
    proc = host.reconciler("sync")
    assert proc.returncode == 1 and "no reconciler watch runs" in proc.stderr, proc.stderr


def test_an_unreachable_remote_keeps_the_network_up(host: Host, repo: Repo, first: str) -> None:
    daemon = start_gitops(host, repo)
    wait_for("the first commit", lambda: applied(host, first), daemon)
    server = host.serve("db", 6379, "pong")
    moved = repo.bare.with_name("moved.git")
    repo.bare.rename(moved)

    def failing() -> bool:
        error = status(host)["fetch"].get("error")
        return bool(error) and error.startswith(f"git fetch {repo.url}:")

    wait_for("the failed fetch to be reported", failing, daemon)
    fetches = [e for e in log_lines(daemon) if e["event"] == "fetch"]
    assert fetches and fetches[-1]["result"] == "failed", fetches
    text = http_get(host, "/metrics")
    failures = [
        line for line in text.splitlines() if line.startswith("netreconciler_watch_git_fetch_failures_total ")
    ]
    assert failures and float(failures[0].split()[-1]) >= 1, text
    assert host.netns_list() == ["db", "web"] and web_reaches_db(host) and applied(host, first)
    server.stop()

    moved.rename(repo.bare)
    second = repo.commit({"containers.yaml": containers(WEB)})
    wait_for("the commit after the outage", lambda: applied(host, second), daemon)
    assert status(host)["fetch"]["error"] is None and host.netns_list() == ["web"]


def test_a_restart_resumes_the_applied_revision_without_the_remote(
    host: Host, repo: Repo, first: str
) -> None:
    """The remote is gone when the daemon restarts: it resumes from the revision it applied (kept in
    the clone), repairs drift, and reports the failing fetch."""
    daemon = start_gitops(host, repo)
    wait_for("the first commit", lambda: applied(host, first), daemon)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0, daemon.output()
    repo.bare.rename(repo.bare.with_name("moved.git"))

    daemon = start_gitops(host, repo)
    wait_for("the start reconcile", lambda: bool(reconciles(daemon, "in_sync")), daemon)
    start = reconciles(daemon)[0]
    assert start["trigger"] == "start" and start["revision"] == revision(first), start
    wait_for("the failed fetch", lambda: bool(status(host)["fetch"].get("error")), daemon)
    veth = host.show()["containers"]["web"]["interfaces"][0]["host_ifname"]
    host.run(["ip", "link", "del", veth])
    wait_for("the veth to be repaired", lambda: veth in host.links(), daemon)
    assert applied(host, first) and host.netns_list() == ["db", "web"]


def test_suspend_holds_local_edits(host: Host, tmp_path: Path) -> None:
    """Following files, suspend holds spec edits (a sync passes them by); resume applies them."""
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "networks.yaml").write_text(NETWORKS)
    (specs / "containers.yaml").write_text(containers(WEB))
    daemon = start_watch(host, specs)
    wait_for("the first reconcile", lambda: bool(reconciles(daemon, "applied")), daemon)
    assert host.reconciler("suspend").returncode == 0
    replace(specs / "containers.yaml", containers(WEB, db()))
    held = "suspended: holding a spec edit until `reconciler resume`"
    wait_for("the edit to be held", lambda: held in daemon.output(), daemon)
    proc = host.reconciler("sync")
    assert proc.returncode == 0 and "suspended: revisions" in proc.stdout, proc.stdout + proc.stderr
    assert host.netns_list() == ["web"]
    assert host.reconciler("resume").returncode == 0
    wait_for("the held edit", lambda: host.netns_list() == ["db", "web"], daemon)
