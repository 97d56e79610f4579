"""A throwaway "host" for real-kernel tests: new network, mount and pid namespaces.

Nothing done through a `Host` can reach this machine's own network: every command runs inside the
sandbox's network namespace, with private tmpfs mounts on the directories the reconciler and
`ip netns` write (/run/netns, /etc/netns, /var/lib/reconciler). The sandbox's init is pid 1 of its own
pid namespace, so killing it makes the kernel kill every helper started inside, and dropping the last
reference to the network namespace deletes every interface, namespace and nft table made there.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
STATE_DIR = "/var/lib/reconciler"
PRIVATE_DIRS = ("/run/netns", "/etc/netns", STATE_DIR)
# --kill-child: should unshare itself die, the sandbox's init (and so the whole sandbox) goes with it.
UNSHARE = (
    "unshare",
    "--net",
    "--mount",
    "--pid",
    "--fork",
    "--kill-child",
    "--mount-proc",
    "--propagation",
    "private",
)

# The sandbox's init. A directory that does not exist on this machine cannot be a mount point, and
# creating it would change the machine, so its parent is first covered by an overlay whose upper layer
# lives in the sandbox's scratch tmpfs. Every missing directory is made before any tmpfs is mounted:
# an overlay made for one (/var/lib for /var/lib/reconciler) would cover a tmpfs mounted before it
# (/var/lib/containers). /sys is remounted so that it shows the sandbox's interfaces, not the
# machine's (a sysfs mount shows the network namespace of whoever mounted it).
INIT = r"""
set -e
scratch=$1; shift
mount -t tmpfs -o mode=0755 sandbox "$scratch"
overlaid=" "
writable() {  # $1 is, or lies under, a directory we covered with an overlay
    q=$1
    while :; do
        case "$overlaid" in *" $q "*) return 0 ;; esac
        [ "$q" != / ] || return 1
        q=$(dirname "$q")
    done
}
make_dir() {
    d=$1
    if [ ! -d "$d" ]; then
        p=$(dirname "$d")
        while [ ! -d "$p" ]; do p=$(dirname "$p"); done
        if ! writable "$p"; then
            n=$(printf %s "$p" | tr / _)
            mkdir -p "$scratch/overlay$n/upper" "$scratch/overlay$n/work"
            mount -t overlay overlay \
                -o "lowerdir=$p,upperdir=$scratch/overlay$n/upper,workdir=$scratch/overlay$n/work" "$p"
            overlaid="$overlaid$p "
        fi
        mkdir -p "$d"
    fi
}
for d in "$@"; do make_dir "$d"; done
for d in "$@"; do mount -t tmpfs -o mode=0755 private "$d"; done
umount -l /sys
mount -t sysfs sysfs /sys
ip link set lo up
echo ready
exec sleep infinity
"""

# A TCP server: answers every connection with one line (argv[2]) after reading what the client sent;
# "{peer}" in the line becomes the client's address as the server sees it (to tell NAT from none).
SERVER = r"""
import socket, sys, threading
port, reply = int(sys.argv[1]), sys.argv[2].encode() + b"\n"
if sys.argv[3:] == ["dual"]:  # both families; an IPv4 peer shows as itself, not as ::ffff:a.b.c.d
    srv = socket.create_server(("::", port), family=socket.AF_INET6, dualstack_ipv6=True)
else:
    srv = socket.create_server(("0.0.0.0", port))
print("listening", flush=True)
def handle(conn, peer):
    with conn:
        conn.settimeout(2)
        try:
            conn.recv(65536)
        except OSError:
            pass
        conn.sendall(reply.replace(b"{peer}", peer[0].removeprefix("::ffff:").encode()))
while True:
    conn, peer = srv.accept()
    threading.Thread(target=handle, args=(conn, peer), daemon=True).start()
"""

# A TCP client: connects (resolving names through the hosts file of the namespace it runs in), sends
# one line and reports what came back, as JSON.
CLIENT = r"""
import json, socket, sys
host, port, timeout, payload = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
family = {"4": socket.AF_INET, "6": socket.AF_INET6}.get(sys.argv[5])
def connect():
    if family is None:
        return socket.create_connection((host, port), timeout=timeout)
    found = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)[0]
    s = socket.socket(found[0], socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(found[4])
    return s
try:
    with connect() as s:
        s.sendall(payload.encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    print(json.dumps({"ok": True, "data": b"".join(chunks).decode(errors="replace"), "error": ""}))
except OSError as e:
    print(json.dumps({"ok": False, "data": "", "error": repr(e)}))
"""


class SandboxError(Exception):
    """The sandbox could not be started, or a command inside it failed."""


@dataclass(frozen=True)
class Connection:
    """The outcome of one client connection: `ok` means the TCP connection was established."""

    ok: bool
    data: str
    error: str


@dataclass(frozen=True)
class Outside:
    """A namespace joined to the sandbox's host namespace by a veth, like a machine on the LAN."""

    netns: str
    host_ifname: str
    host_ip: str
    ip: str


class Server:
    """A background TCP server inside the sandbox; the sandbox's end kills it."""

    def __init__(self, proc: subprocess.Popen[str], netns: str | None, port: int, reply: str) -> None:
        self.proc, self.netns, self.port, self.reply = proc, netns, port, reply

    def stop(self) -> str:
        """Kill the server; returns what it wrote to stderr."""
        # nsenter forked the server into the sandbox's pid namespace: kill the whole process group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        _, err = self.proc.communicate(timeout=10)
        return err or ""


class Background:
    """A long-running command inside the sandbox (e.g. `reconciler watch`), its output in a file."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc, self.log = proc, log

    @property
    def pid(self) -> int:
        """The command's pid as seen from here: nsenter's child (nsenter forks to enter the pid
        namespace, and does not forward signals)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        if len(children) != 1:
            raise SandboxError(f"expected one child of nsenter {self.proc.pid}, found {children}")
        return int(children[0])

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)
        if signum == signal.SIGCONT:
            # nsenter stops itself when its child stops (passing the stop on): resume it too, or
            # it never collects the child's exit status.
            os.kill(self.proc.pid, signal.SIGCONT)

    def wait(self, timeout: float) -> int:
        """The command's exit status (nsenter passes it on)."""
        return self.proc.wait(timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


class Host:
    """One sandbox. Use as a context manager, or call close()."""

    def __init__(
        self, workdir: Path | None = None, start_timeout: float = 10.0, private_dirs: tuple[str, ...] = ()
    ) -> None:
        """`private_dirs`: more directories to cover with a private tmpfs (e.g. a container runtime's).
        Every missing directory is made before any tmpfs is mounted (see INIT)."""
        self._scratch = tempfile.mkdtemp(prefix="sandbox-scratch-")
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="sandbox-"))
        self.state_dir = STATE_DIR
        self._servers: list[Server] = []
        self._background: list[Background] = []
        self._proc = subprocess.Popen(
            [*UNSHARE, "sh", "-c", INIT, "sandbox-init", self._scratch, *private_dirs, *PRIVATE_DIRS],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            self._wait_ready(start_timeout)
            self.pid = self._init_pid()
            self._netns_inode = os.stat(f"/proc/{self.pid}/ns/net").st_ino
            if self._netns_inode == os.stat("/proc/self/ns/net").st_ino:
                raise SandboxError("the sandbox shares this machine's network namespace")
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, timeout: float) -> None:
        assert self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        line = self._proc.stdout.readline() if ready else ""
        if line.strip() != "ready":
            self._proc.kill()
            _, err = self._proc.communicate(timeout=10)
            raise SandboxError(f"sandbox did not start: {err.strip() or 'no ready line'}")

    def _init_pid(self) -> int:
        """The pid (as seen here) of the sandbox's init: unshare's only child."""
        parent = self._proc.pid
        children = Path(f"/proc/{parent}/task/{parent}/children")
        if children.exists():
            pids = children.read_text().split()
        else:
            pids = [p.name for p in Path("/proc").iterdir() if p.name.isdigit() and _ppid(p) == parent]
        if len(pids) != 1:
            raise SandboxError(f"expected one child of unshare {parent}, found {pids}")
        return int(pids[0])

    def _enter(self) -> list[str]:
        # Guard against pid reuse: entering a recycled pid could mean entering this machine's namespaces.
        try:
            alive = os.stat(f"/proc/{self.pid}/ns/net").st_ino == self._netns_inode
        except (AttributeError, FileNotFoundError):
            alive = False
        if not alive or self._proc.poll() is not None:
            raise SandboxError("the sandbox is gone")
        return ["nsenter", f"--target={self.pid}", "--net", "--mount", "--pid", f"--wd={os.getcwd()}"]

    def run(
        self,
        cmd: list[str] | str,
        check: bool = True,
        input: str | None = None,
        timeout: float = 60,
        netns: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command (a list, or a string for `sh -c`) in the sandbox, or in one of its namespaces."""
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
        proc = subprocess.run(
            [*self._enter(), *argv],
            check=False,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
        if check and proc.returncode != 0:
            raise SandboxError(
                f"command {argv} exited {proc.returncode}\n--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"
            )
        return proc

    def reconciler(
        self,
        *args: str,
        check: bool = False,
        timeout: float = 120,
        env: dict[str, str] | None = None,
        prefix: tuple[str, ...] = (),
    ) -> subprocess.CompletedProcess[str]:
        """`python -m reconciler ARGS` in the sandbox's host namespace, with this checkout importable;
        `prefix` runs it under another command (e.g. setpriv), `env` adds variables."""
        argv = [*prefix, sys.executable, "-m", "reconciler", *args]
        return self.run(argv, check=check, timeout=timeout, env=_reconciler_env(env))

    def reconciler_background(self, *args: str, log: Path, env: dict[str, str] | None = None) -> Background:
        """`python -m reconciler ARGS` left running in the sandbox's host namespace (see `background`)."""
        argv = [sys.executable, "-m", "reconciler", *args]
        return self.background(argv, log=log, env=_reconciler_env(env))

    def background(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> Background:
        """Start a command in the sandbox's host namespace and leave it running, its stdout and
        stderr going to `log`; the sandbox's end kills it."""
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [*self._enter(), *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        background = Background(proc, log)
        self._background.append(background)
        return background

    def write_spec(self, spec: str | dict[str, Any], name: str = "spec.yaml") -> Path:
        """Write a spec (YAML text, or a dict dumped as YAML) where the sandbox can read it."""
        path = self.workdir / name
        text = spec if isinstance(spec, str) else yaml.safe_dump(spec, sort_keys=False)
        path.write_text(text)
        return path

    def show(self, spec: Path | None = None) -> dict[str, Any]:
        """`reconciler show [SPEC] -o json`: the spec's scope (its `name`), or the default scope
        (from `show_all`; empty when the default scope has nothing here)."""
        if spec is None:
            empty: dict[str, Any] = {"networks": {}, "containers": {}, "nftables": {}}
            return {"scope": "default", **self.show_all()["scopes"].get("default", empty)}
        proc = self.reconciler("show", str(spec), "-o", "json", check=True)
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def show_all(self) -> dict[str, Any]:
        """`reconciler show -o json`: every scope on the host, `{"scopes": {NAME: ...}}`."""
        proc = self.reconciler("show", "-o", "json", check=True)
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def links(self, netns: str | None = None) -> dict[str, int]:
        """Interface name -> index, in the host namespace or in a named namespace."""
        out = self.run(["ip", "-j", "link", "show"], netns=netns).stdout
        return {link["ifname"]: link["ifindex"] for link in json.loads(out)}

    def netns_list(self) -> list[str]:
        """Namespace names as `ip netns list` shows them, without the "(id: N)" suffix."""
        out = self.run(["ip", "netns", "list"]).stdout
        return sorted(line.split()[0] for line in out.splitlines() if line.strip())

    def nft_tables(self) -> list[str]:
        """`family name` of every nft table."""
        out = self.run(["nft", "list", "tables"]).stdout
        return sorted(line.removeprefix("table ").strip() for line in out.splitlines() if line.strip())

    def default_route(self, netns: str) -> list[dict[str, Any]]:
        routes: list[dict[str, Any]] = json.loads(
            self.run(["ip", "-j", "route", "show", "default"], netns=netns).stdout
        )
        return routes

    def serve(
        self, netns: str | None, port: int, reply: str, timeout: float = 10, dual: bool = False
    ) -> Server:
        """Start a TCP server on 0.0.0.0:PORT in a namespace (None: the sandbox's host namespace);
        `dual`: on [::]:PORT, for both families."""
        argv = [sys.executable, "-c", SERVER, str(port), reply, *(["dual"] if dual else [])]
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
        proc = subprocess.Popen(
            [*self._enter(), *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        server = Server(proc, netns, port, reply)
        self._servers.append(server)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if not ready or proc.stdout.readline().strip() != "listening":
            raise SandboxError(f"server {netns}:{port} did not start: {server.stop()}")
        return server

    def connect(
        self,
        netns: str | None,
        host: str,
        port: int,
        timeout: float = 2.0,
        payload: str = "hello\n",
        family: int = 0,
    ) -> Connection:
        """Connect from a namespace (None: the host namespace) to HOST:PORT; HOST may be a name,
        resolved in `family` (4 or 6) when given, else to its first address."""
        argv = [sys.executable, "-c", CLIENT, host, str(port), str(timeout), payload, str(family)]
        out = self.run(argv, netns=netns, timeout=timeout + 30).stdout
        return Connection(**json.loads(out))

    def add_outside(
        self,
        netns: str = "outside",
        host_ip: str = "198.51.100.1",
        ip: str = "198.51.100.2",
        prefix: int = 24,
        host_ip6: str | None = None,
        ip6: str | None = None,
    ) -> Outside:
        """Create a namespace joined to the host namespace by a veth, routed through the host; with
        `host_ip6` and `ip6` also over IPv6 (a /64, no duplicate detection).

        The addresses default to TEST-NET-2 and exist only inside the sandbox.
        """
        host_if = f"sbx-{netns}"[:15]
        self.run(["ip", "netns", "add", netns])
        self.run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", netns])
        self.run(["ip", "addr", "add", f"{host_ip}/{prefix}", "dev", host_if])
        self.run(["ip", "link", "set", host_if, "up"])
        self.run(["ip", "addr", "add", f"{ip}/{prefix}", "dev", "eth0"], netns=netns)
        self.run(["ip", "link", "set", "eth0", "up"], netns=netns)
        self.run(["ip", "link", "set", "lo", "up"], netns=netns)
        self.run(["ip", "route", "add", "default", "via", host_ip], netns=netns)
        if host_ip6 and ip6:
            self.run(["ip", "addr", "add", f"{host_ip6}/64", "dev", host_if, "nodad"])
            self.run(["ip", "addr", "add", f"{ip6}/64", "dev", "eth0", "nodad"], netns=netns)
            self.run(["ip", "-6", "route", "add", "default", "via", host_ip6], netns=netns)
        return Outside(netns, host_if, host_ip, ip)

    def close(self) -> None:
        pid = getattr(self, "pid", None)
        if pid is not None and self._proc.poll() is None:
            # Only SIGKILL reaches a pid namespace's init from outside it; its death kills the rest.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self._proc.poll() is None and pid is None:
            self._proc.kill()
        try:
            self._proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.communicate(timeout=10)
        for server in self._servers:
            server.stop()
        for background in self._background:
            background.stop()
        shutil.rmtree(self._scratch, ignore_errors=True)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reconciler_env(extra: dict[str, str] | None) -> dict[str, str]:
    """This environment plus `extra`, with this checkout importable."""
    full = dict(os.environ) | (extra or {})
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), full.get("PYTHONPATH")) if p)
    return full


def _ppid(proc_dir: Path) -> int | None:
    try:
        for line in (proc_dir / "status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


UNDERLAY_PREFIX = "192.0.2"  # TEST-NET-1: the simulated underlay exists only inside the sandboxes


@dataclass
class Cluster:
    """Sandboxed hosts on one simulated underlay: `underlay` is a sandbox whose bridge `ul` is the
    switch (with UNDERLAY_PREFIX.1, to act as a client on the LAN); host i has UNDERLAY_PREFIX.(11+i)
    on its `ul0`."""

    underlay: Host
    hosts: list[Host]
    addresses: list[str]


def cable(a: Host, b: Host, a_ifname: str, b_ifname: str, mtu: int = 1500) -> None:
    """A veth from sandbox A's host namespace to sandbox B's: a cable between two machines.

    `ip` runs in A's network namespace only (not its mount and pid namespaces), so B's init pid,
    as this machine sees it, names B's network namespace."""
    a._enter()  # refuses a sandbox that is gone
    b._enter()
    subprocess.run(
        ["nsenter", f"--target={a.pid}", "--net", "ip", "link", "add", a_ifname, "mtu", str(mtu),
         "type", "veth", "peer", "name", b_ifname, "mtu", str(mtu), "netns", str(b.pid)],
        check=True, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def require_root() -> None:
    """Skip the calling test unless this run can build sandboxes."""
    if os.geteuid() != 0:
        pytest.skip("integration tests need root: they create namespaces, veths, bridges and nft tables")
    missing = [tool for tool in ("unshare", "nsenter") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"integration tests need util-linux's {' and '.join(missing)}")


@contextlib.contextmanager
def make_cluster(
    count: int, workdir: Path, mtu: int = 1500, private_dirs: tuple[str, ...] = ()
) -> Iterator[Cluster]:
    """COUNT sandboxed hosts sharing WORKDIR (so they read the same spec), cabled to an underlay switch,
    all closed on leaving; `private_dirs`: more directories each host covers with a private tmpfs (see
    `Host`). Skips the calling test unless it can build sandboxes."""
    require_root()
    underlay = Host(workdir=workdir)
    hosts: list[Host] = []
    try:
        underlay.run(f"ip link add ul type bridge && ip link set ul mtu {mtu} up")
        underlay.run(f"ip addr add {UNDERLAY_PREFIX}.1/24 dev ul")
        addresses = []
        for i in range(count):
            host = Host(workdir=workdir, private_dirs=private_dirs)
            hosts.append(host)
            address = f"{UNDERLAY_PREFIX}.{11 + i}"
            cable(host, underlay, "ul0", f"ul-h{i}", mtu)
            underlay.run(f"ip link set ul-h{i} master ul up")
            host.run(f"ip addr add {address}/24 dev ul0 && ip link set ul0 up")
            addresses.append(address)
        yield Cluster(underlay, hosts, addresses)
    finally:
        for h in [*hosts, underlay]:
            h.close()
