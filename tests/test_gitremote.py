"""The git remote of `watch --git` without a kernel: bounded git calls, redacted URLs, refused
unsigned commits, and the --interval syntax."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.cli import _duration
from reconciler.watch import gitremote
from reconciler.watch.gitremote import GitFailed, GitRemote, Unverified, redact

GIT_ENV = {
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.org",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.org",
}


def test_redact_hides_passwords_and_tokens() -> None:
    assert redact("https://bot:s3cret@git.example/net.git") == "https://bot:***@git.example/net.git"
    assert redact("https://git.example/net.git") == "https://git.example/net.git"
    assert redact("ssh://git@git.example/net.git") == "ssh://git@git.example/net.git"


def test_a_remote_that_never_answers_is_a_named_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An "ssh" that hangs: the fetch is killed after the timeout, with everything it started.
    monkeypatch.setenv("GIT_SSH_COMMAND", "sleep 60;:")
    monkeypatch.setattr(gitremote, "GIT_TIMEOUT", 1.0)
    remote = GitRemote("ssh://git@example.invalid/net.git", "main", ".", tmp_path / "clone")
    remote.prepare()
    with pytest.raises(
        GitFailed, match=r"^git fetch ssh://git@example.invalid/net.git: no answer after 1 s$"
    ):
        remote.fetch()


def test_an_unreachable_remote_names_the_command(tmp_path: Path) -> None:
    remote = GitRemote(f"file://{tmp_path}/missing.git", "main", ".", tmp_path / "clone")
    remote.prepare()
    with pytest.raises(GitFailed, match=rf"^git fetch file://{tmp_path}/missing.git: .*does not appear"):
        remote.fetch()


def test_an_unsigned_commit_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in GIT_ENV.items():
        monkeypatch.setenv(name, value)
    work = tmp_path / "work"
    subprocess.run(["git", "init", "-q", "--initial-branch=main", str(work)], check=True)
    (work / "spec.yaml").write_text("version: 1\n")
    subprocess.run(["git", "-C", str(work), "add", "."], check=True)
    subprocess.run(["git", "-C", str(work), "commit", "-qm", "spec"], check=True)
    signers = tmp_path / "allowed_signers"
    signers.write_text("")
    remote = GitRemote(f"file://{work}", "main", ".", tmp_path / "clone", signers)
    remote.prepare()
    sha = remote.fetch()
    with pytest.raises(Unverified, match=f"^commit {sha} is not signed by an allowed key"):
        remote.verify(sha)
    remote.checkout(sha)
    assert (remote.spec_path / "spec.yaml").read_text() == "version: 1\n"
    assert remote.revision(sha) == f"main@sha1:{sha}"


def test_interval_syntax() -> None:
    assert [_duration(t) for t in ("30s", "5m", "1h", "2.5")] == [30, 300, 3600, 2.5]
    for bad in ("", "s", "-1m", "soon"):
        with pytest.raises(argparse.ArgumentTypeError):
            _duration(bad)


@pytest.fixture
def gnupg(tmp_path: Path) -> Iterator[Path]:
    """A signer's keyring (its agent stopped afterwards), needing gpg."""
    if shutil.which("gpg") is None:
        pytest.skip("needs gpg")
    home = tmp_path / "signer-gnupg"
    home.mkdir(mode=0o700)
    yield home
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)


def _gpg_key(home: Path, email: str) -> str:
    gpg = ["gpg", "--homedir", str(home), "--batch", "--quiet", "--passphrase", ""]
    subprocess.run([*gpg, "--quick-gen-key", f"signer <{email}>", "ed25519", "sign", "never"], check=True)
    return subprocess.run(
        ["gpg", "--homedir", str(home), "--armor", "--export", email],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def test_openpgp_keys_allow_their_signatures_only(
    tmp_path: Path, gnupg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in GIT_ENV.items():
        monkeypatch.setenv(name, value)
    allowed = _gpg_key(gnupg, "allowed@example.org")
    _gpg_key(gnupg, "stranger@example.org")
    keys = tmp_path / "keys.asc"
    keys.write_text(allowed)
    work = tmp_path / "work"
    subprocess.run(["git", "init", "-q", "--initial-branch=main", str(work)], check=True)

    def commit(*signing: str) -> None:
        (work / "spec.yaml").write_text(f"version: 1\n# {len(signing)} {os.urandom(4).hex()}\n")
        subprocess.run(["git", "-C", str(work), "add", "."], check=True)
        env = {**os.environ, "GNUPGHOME": str(gnupg)}
        subprocess.run(["git", "-C", str(work), "commit", "-q", *signing, "-m", "spec"], check=True, env=env)

    remote = GitRemote(f"file://{work}", "main", ".", tmp_path / "clone", keys)
    remote.prepare()
    commit("--gpg-sign=allowed@example.org")
    remote.verify(remote.fetch())
    commit("--gpg-sign=stranger@example.org")
    with pytest.raises(Unverified, match="is not signed by an allowed key"):
        remote.verify(remote.fetch())
    commit()
    with pytest.raises(Unverified, match="it has no signature"):
        remote.verify(remote.fetch())

    # SSH keys only: an OpenPGP signature finds no key, not even in the keyring of the environment.
    commit("--gpg-sign=allowed@example.org")
    monkeypatch.setenv("GNUPGHOME", str(gnupg))
    signers = tmp_path / "allowed_signers"
    signers.write_text("")
    ssh_only = GitRemote(f"file://{work}", "main", ".", tmp_path / "clone", signers)
    ssh_only.prepare()
    with pytest.raises(Unverified, match="is not signed by an allowed key"):
        ssh_only.verify(ssh_only.fetch())
    no_keys = GitRemote(f"file://{work}", "main", ".", tmp_path / "clone")
    no_keys.prepare()
    assert "allowedSignersFile" not in (tmp_path / "clone" / ".git" / "config").read_text()
