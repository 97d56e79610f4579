"""How long host-a takes to program N remote containers (FDB + neighbour entries, hosts files) on an
overlay, and a no-op apply after it. Runs in a sandbox (tests/sandbox.py); needs root.

    .venv/bin/python bench/overlay_entries.py 1000
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from sandbox import Host


def main(remote: int, local: int = 10) -> None:
    spec = {
        "version": 1,
        "hosts": {"host-a": {"address": "192.0.2.11"}, "host-b": {"address": "192.0.2.12"}},
        "networks": {"pets": {"driver": "overlay", "subnet": "10.200.0.0/16"}},
        "containers": {
            **{f"a{i}": {"host": "host-a", "networks": ["pets"]} for i in range(local)},
            **{f"b{i}": {"host": "host-b", "networks": ["pets"]} for i in range(remote)},
        },
    }
    with tempfile.TemporaryDirectory() as work, Host(workdir=Path(work)) as host:
        host.run("ip link add ul0 type veth peer name ul1 && ip addr add 192.0.2.11/24 dev ul0")
        host.run("ip link set ul0 up && ip link set ul1 up")
        path = host.write_spec(spec)
        assert host.reconciler("lock", str(path)).returncode == 0
        for label in ("cold", "no-op"):
            start = time.monotonic()
            proc = host.reconciler("apply", str(path), "--host", "host-a", timeout=600)
            assert proc.returncode == 0, proc.stderr
            print(
                f"{label} apply, {local} local + {remote} remote containers: {time.monotonic() - start:.2f} s"
            )
        entries = host.run("bridge fdb show | grep -c self").stdout.strip()
        print(f"FDB entries (self): {entries}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
