"""The workload every peer builds: N containers over 10 bridge networks, each publishing one TCP port,
and the untimed proof that it was built (namespaces exist, published ports answer over TCP). The
dual-stack variant (ours only) gives every network an IPv6 /64 too, and proves the ports over IPv6."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

from reconciler.netns import is_netns, run_in

NETWORKS = 10
CONTAINER_PORT = 8080
HOST_PORT_BASE = 20000


@dataclass(frozen=True)
class Container:
    index: int

    @property
    def name(self) -> str:
        return f"c{self.index}"

    @property
    def net(self) -> int:
        return self.index % NETWORKS

    @property
    def host_port(self) -> int:
        return HOST_PORT_BASE + self.index

    @property
    def address(self) -> str:
        """For the peers that assign addresses themselves (shell, floor)."""
        slot = self.index // NETWORKS + 2
        return f"10.{100 + self.net}.{slot >> 8}.{slot & 255}"

    @property
    def netns(self) -> str:
        return f"/run/netns/{self.name}"


def subnet(net: int) -> str:
    return f"10.{100 + net}.0.0/16"


def gateway(net: int) -> str:
    return f"10.{100 + net}.0.1"


def subnet6(net: int) -> str:
    return f"fd00:{100 + net}::/64"


def gateway6(net: int) -> str:
    return f"fd00:{100 + net}::1"


def containers(n: int) -> list[Container]:
    return [Container(i) for i in range(n)]


def spec(n: int, extra: int = 0, port_of: dict[int, int] | None = None, dual: bool = False) -> dict[str, Any]:
    """The reconciler's spec for the workload (`extra` more containers, some host ports changed;
    `dual`: every network dual-stack)."""
    port_of = port_of or {}
    subnets = {j: [subnet(j), subnet6(j)] if dual else subnet(j) for j in range(NETWORKS)}
    return {
        "version": 1,
        "networks": {f"net{j}": {"driver": "bridge", "subnet": subnets[j]} for j in range(NETWORKS)},
        "containers": {
            c.name: {
                "networks": [f"net{c.net}"],
                "ports": [f"{port_of.get(c.index, c.host_port)}:{CONTAINER_PORT}"],
            }
            for c in containers(n + extra)
        },
    }


def _listen_in(path: str, dual: bool) -> socket.socket:
    """A listening socket inside the namespace at `path`; `dual`: for both families."""
    if dual:
        return run_in(
            path,
            lambda: socket.create_server(("::", CONTAINER_PORT), family=socket.AF_INET6, dualstack_ipv6=True),
        )
    return run_in(path, lambda: socket.create_server(("0.0.0.0", CONTAINER_PORT)))


def sample(n: int, k: int = 10) -> list[Container]:
    """Spread over the networks and the whole range, first and last included."""
    picks = sorted({0, n - 1, *range(0, n, max(1, n // k))})
    return [Container(i) for i in picks]


def proof(n: int, target: Any, names_prefix: str = "c", dual: bool = False) -> dict[str, Any]:
    """Every namespace exists; in a sample of containers a server answers through `target(c)` -> (host,
    port) (a published port, or the container's address for peers without port mapping); `dual`: the
    server listens on both families (the dual-stack workload)."""
    present = sum(1 for c in containers(n) if is_netns(c.netns))
    veths = [x for x in os.listdir("/sys/class/net") if os.path.exists(f"/sys/class/net/{x}/brport")]
    answered, failures = 0, []
    for c in sample(n):
        srv = _listen_in(c.netns, dual)
        try:
            host, port = target(c)
            with socket.create_connection((host, port), timeout=3) as cli:
                cli.settimeout(3)
                conn, _ = srv.accept()
                with conn:
                    conn.sendall(f"hello from {c.name}\n".encode())
                if cli.recv(100).decode().strip() == f"hello from {c.name}":
                    answered += 1
                else:
                    failures.append(c.name)
        except OSError as e:
            failures.append(f"{c.name}: {e}")
        finally:
            srv.close()
    ok = present == n and len(veths) >= n and not failures
    return {
        "ok": ok,
        "netns": present,
        "bridge_ports": len(veths),
        "answered": answered,
        "failures": failures,
    }


def published(c: Container) -> tuple[str, int]:
    return gateway(c.net), c.host_port


def published6(c: Container) -> tuple[str, int]:
    return gateway6(c.net), c.host_port
