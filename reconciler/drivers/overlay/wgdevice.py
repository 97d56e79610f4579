"""The WireGuard device itself: the kernel's where `ip link add type wireguard` works, wireguard-go's
(the WireGuard project's userspace implementation, over a TUN device) where it does not.

Either way `wg` reads and writes it (over netlink for the kernel's, over wireguard-go's UAPI socket in
RUN_DIR otherwise), so reading its state is one `wg show` per observe and changing it one `wg set`
per apply, whatever the number of peers. wireguard-go is a helper process of ours: started detached
(it outlives the apply or daemon that started it), stopped when the device goes. When it dies its TUN
device goes with it, which observation sees as a missing device and the next apply repairs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass

from ...errors import ApplyFailed
from ...rtnl import NetlinkError, Rtnl
from .wgmodel import WgPeer

RUN_DIR = "/var/run/wireguard"
WG_TIMEOUT = 10.0  # seconds for one `wg` call
START_TIMEOUT = 5.0  # for wireguard-go's device to appear
STOP_TIMEOUT = 5.0  # for it to go after SIGTERM
_POLL = 0.02


@dataclass(frozen=True)
class DeviceConfig:
    public_key: str  # "" when the device has no private key yet
    port: int
    peers: tuple[WgPeer, ...]


def create(sock: Rtnl, ifname: str) -> None:
    """The kernel's device if the kernel has WireGuard, else wireguard-go's."""
    try:
        sock.add_link(ifname, "wireguard")
        return
    except NetlinkError as e:
        if e.code != errno.EOPNOTSUPP:  # "Unknown device type": no wireguard module
            raise
    _start_userspace(sock, ifname)


def _start_userspace(sock: Rtnl, ifname: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LOG_LEVEL"}
    # In the foreground, in a session of its own: it is the process that serves the UAPI socket (the
    # socket's peer credentials name it) and outlives us. Its messages go to an unlinked file, read
    # here if it fails to start; a pipe would kill it with SIGPIPE once we are gone.
    with tempfile.TemporaryFile(mode="w+") as log:
        try:
            proc = subprocess.Popen(
                ["wireguard-go", "--foreground", ifname],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise ApplyFailed(
                "this kernel has no WireGuard and wireguard-go is not installed (Debian: wireguard-go)"
            ) from None
        deadline = time.monotonic() + START_TIMEOUT
        while sock.ifindex(ifname) is None or userspace_pid(ifname) != proc.pid:
            if proc.poll() is not None:
                log.seek(0)
                raise ApplyFailed(f"wireguard-go {ifname} exited {proc.returncode}: {_last_line(log.read())}")
            if time.monotonic() > deadline:
                proc.kill()  # ours, and of no use
                proc.wait()
                raise ApplyFailed(f"wireguard-go {ifname}: no device and socket after {START_TIMEOUT:g}s")
            time.sleep(_POLL)


def delete(sock: Rtnl, ifname: str) -> None:
    """Stop wireguard-go (its device goes with it), or delete the kernel's device."""
    pid = userspace_pid(ifname)
    if pid is None:
        index = sock.ifindex(ifname)
        if index is not None:
            with contextlib.suppress(NetlinkError):
                sock.del_link(index)
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while sock.ifindex(ifname) is not None:
        if time.monotonic() > deadline:
            raise ApplyFailed(f"wireguard-go {ifname} (pid {pid}) still runs {STOP_TIMEOUT:g}s after SIGTERM")
        time.sleep(_POLL)


def uapi_socket(ifname: str) -> str:
    return f"{RUN_DIR}/{ifname}.sock"


def userspace_pid(ifname: str) -> int | None:
    """The pid of the wireguard-go serving `ifname` (the UAPI socket's peer), None if none answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(WG_TIMEOUT)
        try:
            s.connect(uapi_socket(ifname))
        except OSError:
            return None
        creds = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid: int = struct.unpack("3i", creds)[0]
    return pid


def read(ifname: str) -> DeviceConfig | None:
    """The device's key, port and peers (`wg show IFNAME dump`); None if `wg` cannot reach it."""
    proc = _wg(["show", ifname, "dump"], check=False)
    if proc.returncode != 0:
        return None
    lines = [line.split("\t") for line in proc.stdout.splitlines() if line]
    if not lines or len(lines[0]) < 3:
        return None
    # Column 0 of the first line is the private key: read past, never kept.
    _, public, port = lines[0][:3]
    peers = tuple(
        sorted(
            WgPeer(cols[0], "" if cols[2] == "(none)" else cols[2], "" if cols[3] == "(none)" else cols[3])
            for cols in lines[1:]
            if len(cols) >= 4
        )
    )
    return DeviceConfig("" if public == "(none)" else public, int(port), peers)


def configure(
    ifname: str, key_file: str | None, port: int | None, peers: list[WgPeer], removed: list[str]
) -> None:
    """One `wg set`: the private key (read by `wg` from the key file), the port, the peers to add or
    update (their allowed IPs replaced) and the public keys of peers to remove."""
    argv = ["set", ifname]
    if key_file is not None:
        argv += ["private-key", key_file]
    if port is not None:
        argv += ["listen-port", str(port)]
    for key in removed:
        argv += ["peer", key, "remove"]
    for peer in peers:
        argv += ["peer", peer.public_key, "endpoint", peer.endpoint, "allowed-ips", peer.allowed_ip]
    if len(argv) > 2:
        _wg(argv, check=True)


def _wg(argv: list[str], check: bool) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(["wg", *argv], capture_output=True, text=True, timeout=WG_TIMEOUT, check=False)
    except FileNotFoundError:
        raise ApplyFailed("`wg` (wireguard-tools) is not installed") from None
    except subprocess.TimeoutExpired:
        raise ApplyFailed(f"`wg {' '.join(argv[:2])}` did not answer within {WG_TIMEOUT:g}s") from None
    if check and proc.returncode != 0:
        raise ApplyFailed(f"`wg {' '.join(argv[:2])}` failed: {_last_line(proc.stderr)}")
    return proc


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith(("┌", "│", "└"))]
    return lines[-1].strip() if lines else "no message"
