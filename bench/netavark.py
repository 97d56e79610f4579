"""Podman's network stack as podman drives it: Debian's netavark, one `netavark setup NETNS` per
container with the network and port JSON on stdin (iptables firewall), `netavark teardown` per
container for destroy. Podman makes the namespace itself and allocates the address (`static_ips`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from .workload import CONTAINER_PORT, Container, gateway, subnet

CANDIDATES = ("/usr/lib/podman/netavark", "/usr/libexec/podman/netavark")


def binary() -> str:
    found = [p for p in CANDIDATES if os.access(p, os.X_OK)] or [p for p in [shutil.which("netavark")] if p]
    if not found:
        raise RuntimeError(f"netavark not found (looked in {', '.join(CANDIDATES)} and PATH)")
    return found[0]


def config(c: Container) -> dict[str, Any]:
    """What podman 4 hands netavark for a container on one bridge network with one published port."""
    net = f"net{c.net}"
    return {
        "container_id": f"{c.index:064x}",
        "container_name": c.name,
        "port_mappings": [
            {
                "host_ip": "",
                "container_port": CONTAINER_PORT,
                "host_port": c.host_port,
                "range": 1,
                "protocol": "tcp",
            }
        ],
        "networks": {net: {"static_ips": [c.address], "aliases": [c.name], "interface_name": "eth0"}},
        "network_info": {net: network_info(c.net)},
    }


def network_info(j: int) -> dict[str, Any]:
    return {
        "name": f"net{j}",
        "id": f"{j + 1:064x}",
        "driver": "bridge",
        "network_interface": f"nv{j}",
        "subnets": [{"subnet": subnet(j), "gateway": gateway(j)}],
        "ipv6_enabled": False,
        "internal": False,
        "dns_enabled": False,
        "ipam_options": {"driver": "host-local"},
    }


class Netavark:
    def __init__(self, workdir: Path) -> None:
        self.argv = [binary(), "--config", str(workdir / "netavark")]
        (workdir / "netavark").mkdir(exist_ok=True)
        # iptables, as podman gets it without firewalld: forced, so that netavark never asks a firewalld
        # over D-Bus (which would be this machine's). iptables' lock file, by default in the machine's
        # /run, in the sandbox's workdir.
        self.env = dict(os.environ, NETAVARK_FW="iptables", XTABLES_LOCKFILE=str(workdir / "xtables.lock"))

    def run(self, command: str, c: Container) -> None:
        proc = subprocess.run(
            [*self.argv, command, c.netns],
            input=json.dumps(config(c)),
            capture_output=True,
            text=True,
            env=self.env,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"netavark {command} {c.name} exited {proc.returncode}: "
                f"{proc.stdout[-1000:]} {proc.stderr[-1000:]}"
            )
