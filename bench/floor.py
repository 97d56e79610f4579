"""The floor: a hand-written pyroute2 script doing only the necessary netlink calls for the workload,
with no observation, no planning, no ownership marks, no state. `python -m bench.floor up|down N RULES`.

Namespaces are made as `ip netns add` makes them (unshare + bind mount) from one thread, fork-free;
published ports go to the kernel as one nft transaction (the same rules as the shell peer's).
"""

from __future__ import annotations

import ctypes
import os
import socket
import sys
from concurrent.futures import ThreadPoolExecutor

CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MNT_DETACH = 2
NETWORKS = 10
_libc = ctypes.CDLL(None, use_errno=True)
_worker = ThreadPoolExecutor(max_workers=1)


def _new_netns(path: str) -> int:
    """Create and mount a namespace; returns a netlink socket's descriptor inside it."""
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444))

    def run() -> int:
        assert _libc.unshare(CLONE_NEWNET) == 0
        src = f"/proc/self/task/{_gettid()}/ns/net"
        assert _libc.mount(src.encode(), path.encode(), b"none", MS_BIND, None) == 0
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0).detach()

    return _worker.submit(run).result()


def _gettid() -> int:
    import threading

    return threading.get_native_id()


def up(n: int, rules: str) -> None:
    import nftables
    from pyroute2 import IPRoute

    os.makedirs("/run/netns", exist_ok=True)
    with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
        f.write("1")
    with IPRoute() as ipr:
        bridges = []
        for j in range(NETWORKS):
            ipr.link("add", ifname=f"fb{j}", kind="bridge")
            (index,) = ipr.link_lookup(ifname=f"fb{j}")
            ipr.addr("add", index=index, address=f"10.{100 + j}.0.1", prefixlen=16)
            ipr.link("set", index=index, state="up")
            bridges.append(index)
        for i in range(n):
            net, slot = i % NETWORKS, i // NETWORKS + 2
            path = f"/run/netns/c{i}"
            fd = _new_netns(path)
            nsfd = os.open(path, os.O_RDONLY)
            try:
                ipr.link(
                    "add",
                    ifname=f"fv{i}",
                    kind="veth",
                    peer={"ifname": "eth0", "net_ns_fd": nsfd, "index": 2},
                    master=bridges[net],
                    state="up",
                )
            finally:
                os.close(nsfd)
            with IPRoute(fileno=fd) as ns:
                ns.link("set", index=1, state="up")
                ns.link("set", index=2, state="up")
                ns.addr("add", index=2, address=f"10.{100 + net}.{slot >> 8}.{slot & 255}", prefixlen=16)
                ns.route("add", dst="0.0.0.0/0", gateway=f"10.{100 + net}.0.1")
    nft = nftables.Nftables()
    with open(rules) as f:
        rc, _, err = nft.cmd(f.read())
    assert rc == 0, err


def down(n: int) -> None:
    import nftables
    from pyroute2 import IPRoute

    nftables.Nftables().cmd("delete table ip shellbench")
    for i in range(n):
        path = f"/run/netns/c{i}"
        _libc.umount2(path.encode(), MNT_DETACH)
        os.unlink(path)
    with IPRoute() as ipr:
        for j in range(NETWORKS):
            ipr.link("del", index=ipr.link_lookup(ifname=f"fb{j}")[0])


if __name__ == "__main__":
    if sys.argv[1] == "up":
        up(int(sys.argv[2]), sys.argv[3])
    else:
        down(int(sys.argv[2]))
