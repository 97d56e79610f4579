"""A git remote as the daemon's desired state: one clone in the state directory, one `git fetch` per
interval, a detached checkout of the branch's tip once it is verified.

Every call is Debian's `git` CLI, so credentials come the way git takes them (credential helpers,
~/.git-credentials, ssh keys and config); prompts are off, since nobody can answer a daemon. Every
call is bounded by GIT_TIMEOUT and a timeout names the command. Signatures are checked by git's own
`verify-commit` against the keys given: an allowed-signers file (SSH signatures) or a file of
armored OpenPGP public keys, imported into a keyring of our own in the clone.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ReconcilerError

GIT_TIMEOUT = float(os.environ.get("RECONCILER_GIT_TIMEOUT", "60"))
TRACKING = "refs/netreconciler/tip"
PGP_ARMOR = "-----BEGIN PGP PUBLIC KEY BLOCK-----"


class GitFailed(ReconcilerError):
    """A git command failed or timed out: the remote is unreachable, or the clone is unusable."""


class Unverified(ReconcilerError):
    """The tip commit is not signed by one of the allowed keys."""


def redact(url: str) -> str:
    """The URL without its password or token, for logs and the status file."""
    return re.sub(r"(://[^/@:]+):[^/@]*@", r"\1:***@", url)


@dataclass
class GitRemote:
    url: str
    branch: str
    path: str  # the spec's directory or file inside the repository ("" or "." for its root)
    clone: Path
    keys: Path | None = None  # --verify-signatures
    # The fetch thread and the main loop's checkout share the clone: one git command at a time.
    _busy: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def in_state_dir(cls, state_dir: Path, url: str, branch: str, path: str, keys: Path | None) -> GitRemote:
        # One clone per remote and branch: a daemon moved to another remote never reuses its history.
        digest = hashlib.sha256(f"{url}\0{branch}".encode()).hexdigest()[:16]
        return cls(url, branch, path, state_dir / "git" / digest, keys)

    @property
    def spec_path(self) -> Path:
        return self.clone / self.path if self.path not in ("", ".") else self.clone

    def revision(self, sha: str) -> str:
        """As Flux writes it: `main@sha1:<40 hex digits>`."""
        return f"{self.branch}@sha1:{sha}"

    def prepare(self) -> None:
        """Create the clone the first time; trust the keys given now (they may differ from last run's)."""
        if not (self.clone / ".git").is_dir():
            self.clone.mkdir(parents=True, exist_ok=True)
            self._git("init", "--quiet")
        self._configure_keys()

    def fetch(self) -> str:
        """Fetch the branch; the commit its tip names."""
        ref = f"+refs/heads/{self.branch}:{TRACKING}"
        # gc.autoDetach=false: an automatic gc runs inside the fetch, under its lock and timeout.
        self._git("-c", "gc.autoDetach=false", "fetch", "--quiet", "--no-tags", "--", self.url, ref)
        return self._git("rev-parse", "--verify", f"{TRACKING}^{{commit}}").strip()

    def verify(self, sha: str) -> None:
        """Raise Unverified unless `sha` carries a good signature by one of the allowed keys."""
        if self.keys is None:
            return
        proc = self._run("verify-commit", "--raw", sha)
        if proc.returncode != 0:
            said = " ".join(proc.stderr.split())
            why = said[-300:] if said else "it has no signature"
            raise Unverified(f"commit {sha} is not signed by an allowed key ({self.keys}): {why}")

    def checkout(self, sha: str) -> None:
        self._git("checkout", "--quiet", "--force", "--detach", sha)
        self._git("clean", "-fdqx")  # files left by a previous revision would join the spec

    @property
    def _gnupg(self) -> Path:
        return self.clone / ".git" / "netreconciler-gnupg"

    def _configure_keys(self) -> None:
        """Trust exactly the given keys: the other kind of signature finds no key either (an empty
        keyring of our own, never root's; no allowed-signers file left from an earlier run)."""
        shutil.rmtree(self._gnupg, ignore_errors=True)
        self._run("config", "--unset-all", "gpg.ssh.allowedSignersFile")  # exit 5 when unset: fine
        if self.keys is None:
            return
        try:
            armored = self.keys.read_text(errors="replace").lstrip().startswith(PGP_ARMOR)
        except OSError as e:
            raise ReconcilerError(f"--verify-signatures {self.keys}: {e.strerror}") from e
        self._gnupg.mkdir(mode=0o700)
        if not armored:
            self._git("config", "gpg.ssh.allowedSignersFile", str(self.keys.resolve()))
            return
        argv = ["gpg", "--batch", "--quiet", "--no-autostart", "--homedir", str(self._gnupg), "--import"]
        # Public keys need no agent (and a daemon should not leave one behind).
        proc = _bounded([*argv, str(self.keys)], "gpg --import", None, {})
        if proc.returncode != 0:
            raise ReconcilerError(
                f"--verify-signatures {self.keys}: gpg --import: {' '.join(proc.stderr.split())}"
            )

    def _git(self, *args: str) -> str:
        proc = self._run(*args)
        if proc.returncode != 0:
            said = " ".join(proc.stderr.split()) or f"exit status {proc.returncode}"
            raise GitFailed(f"git {_verb(args)} {redact(self.url)}: {redact(said)}")
        return proc.stdout

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        # OpenPGP keys: our keyring alone, so a good signature is one by an allowed key.
        extra = {"GNUPGHOME": str(self._gnupg)} if self._gnupg.is_dir() else {}
        what = f"git {_verb(args)} {redact(self.url)}"
        with self._busy:
            return _bounded(["git", "-C", str(self.clone), *args], what, self.clone, extra)


def _verb(args: tuple[str, ...]) -> str:
    return next(a for i, a in enumerate(args) if not a.startswith("-") and (i == 0 or args[i - 1] != "-c"))


def _bounded(
    argv: list[str], what: str, cwd: Path | None, extra: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "LC_ALL": "C", **extra}
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    try:
        # A session of its own: on timeout the whole group goes (ssh, credential helpers), and
        # none of them keeps our pipes open.
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as e:
        raise GitFailed(f"{what}: cannot run {argv[0]}: {e.strerror}") from e
    with proc:
        try:
            out, err = proc.communicate(timeout=GIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise GitFailed(f"{what}: no answer after {GIT_TIMEOUT:g} s") from None
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


@dataclass(frozen=True)
class Fetched:
    """One fetch's outcome, reported by the fetch thread."""

    started: float  # time.time() when it began: it saw every commit pushed before
    sha: str | None
    error: str | None


class Fetcher:
    """Fetches in a thread of its own, every `interval` and when asked (`now`): a slow or
    unreachable remote holds up this thread, never drift repair. It only reports; the loop checks
    out."""

    def __init__(self, remote: GitRemote, interval: float, notify: Callable[[Fetched], None]) -> None:
        self.remote, self.interval, self.notify = remote, interval, notify
        self._asked = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="git-fetch", daemon=True).start()

    def now(self) -> None:
        self._asked.set()

    def _run(self) -> None:
        while True:
            started = time.time()
            try:
                self.notify(Fetched(started, self.remote.fetch(), None))
            except ReconcilerError as e:
                self.notify(Fetched(started, None, str(e)))
            self._asked.wait(self.interval)
            self._asked.clear()
