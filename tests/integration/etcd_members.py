"""A 3-member etcd cluster started by a test inside a sandbox, on sandbox addresses.

Every member is a real `etcd` (Debian's etcd-server) with its data in the test's temporary directory;
`stop`/`start` take one member down and bring it back from its data (the cluster keeps its identity),
and the sandbox's end kills whatever still runs. Every wait is bounded and names what it waited for.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from sandbox import Background, Host

HEALTH_DEADLINE = 60.0
CLIENT_PORT, PEER_PORT = 2379, 2380


@dataclass
class Members:
    host: Host  # the sandbox the members run in
    addresses: list[str]
    workdir: Path
    running: dict[int, Background] = field(default_factory=dict)

    @property
    def endpoints(self) -> list[str]:
        return [f"http://{a}:{CLIENT_PORT}" for a in self.addresses]

    def _argv(self, i: int) -> list[str]:
        a = self.addresses[i]
        initial = ",".join(f"m{j}=http://{b}:{PEER_PORT}" for j, b in enumerate(self.addresses))
        return [
            "etcd",
            f"--name=m{i}",
            f"--data-dir={self.workdir / f'etcd-m{i}'}",
            f"--listen-peer-urls=http://{a}:{PEER_PORT}",
            f"--initial-advertise-peer-urls=http://{a}:{PEER_PORT}",
            f"--listen-client-urls=http://{a}:{CLIENT_PORT}",
            f"--advertise-client-urls=http://{a}:{CLIENT_PORT}",
            f"--initial-cluster={initial}",
            "--initial-cluster-state=new",
            "--initial-cluster-token=netreconciler-test",
            # A loaded 2-core box: a slow fsync must not cost the leader its term.
            "--heartbeat-interval=200",
            "--election-timeout=2000",
            "--auto-compaction-retention=0",
        ]

    def start(self, i: int) -> None:
        log = self.workdir / f"etcd-m{i}.log"
        self.running[i] = self.host.background(self._argv(i), log=log, env={"ETCD_UNSUPPORTED_ARCH": ""})

    def stop(self, i: int) -> None:
        self.running.pop(i).stop()

    def start_all(self) -> None:
        for i in range(len(self.addresses)):
            if i not in self.running:
                self.start(i)

    def stop_all(self) -> None:
        for i in list(self.running):
            self.stop(i)

    def wait_healthy(self, members: list[int] | None = None) -> None:
        """Until every given member (default: the running ones) answers as healthy."""
        wanted = sorted(self.running) if members is None else members
        endpoints = ",".join(self.endpoints[i] for i in wanted)
        deadline = time.monotonic() + HEALTH_DEADLINE
        while True:
            proc = self.host.run(
                ["etcdctl", f"--endpoints={endpoints}", "--command-timeout=2s", "endpoint", "health"],
                check=False,
                env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
                timeout=30,
            )
            if proc.returncode == 0:
                return
            if time.monotonic() > deadline:
                logs = "".join(b.output()[-2000:] for b in self.running.values())
                raise AssertionError(f"etcd members {wanted} not healthy: {proc.stderr}\n{logs}")
            time.sleep(0.3)

    def etcdctl(self, *args: str) -> str:
        proc = self.host.run(
            ["etcdctl", f"--endpoints={','.join(self.endpoints)}", *args],
            env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
            timeout=30,
        )
        return proc.stdout


def start_members(host: Host, addresses: list[str], workdir: Path) -> Members:
    members = Members(host, addresses, workdir)
    try:
        members.start_all()
        members.wait_healthy()
    except BaseException:
        members.stop_all()
        raise
    return members
