"""The seed's overlay example on two simulated hosts, built by the reconciler on this machine's kernel:

    docker network create -d overlay pets-overlay
    docker service create --network pets-overlay --name db redis
    docker service create --network pets-overlay -p 8000:5000 -e DB=db --name web chrch/web

Each host is a throwaway sandbox (tests/sandbox.py: its own network, mount and pid namespaces),
cabled to a third sandbox acting as the underlay switch; this machine's own network is never touched.
Run as root after `bash scripts/bootstrap.sh`:  .venv/bin/python demo/pets-overlay.py
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from sandbox import make_cluster  # noqa: E402

SPEC = ROOT / "specs" / "pets-overlay.yaml"


def section(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def main() -> int:
    with tempfile.TemporaryDirectory() as work:
        spec = Path(work) / SPEC.name
        shutil.copy(SPEC, spec)
        cluster = make_cluster(2, Path(work))
        try:
            a, b = cluster.hosts
            section(f"reconciler lock {SPEC.name}")
            print(a.reconciler("lock", str(spec), check=True).stdout + Path(f"{spec}.lock").read_text())
            for name, host in (("host-a", a), ("host-b", b)):
                section(f"on {name}: reconciler apply {SPEC.name} --host {name}")
                print(host.reconciler("apply", str(spec), "--host", name, check=True).stdout)
            section("a tiny redis in db (host-b), the web app in web-1 (host-a) and web-2 (host-b)")
            b.serve("db", 6379, "+PONG from db on host-b")
            a.serve("web-1", 5000, "hello from web-1 on host-a")
            b.serve("web-2", 5000, "hello from web-2 on host-b")
            ok = True
            conn = a.connect("web-1", "db", 6379)
            print(f"web-1 (host-a) -> db:6379 by name: {conn.data.strip() or conn.error}")
            ok &= conn.ok
            for address in cluster.addresses:
                for _ in range(2):
                    conn = cluster.underlay.connect(None, address, 8000)
                    reply = conn.data.strip() or conn.error
                    print(f"a machine on the LAN -> {address}:8000 (routing mesh): {reply}")
                    ok &= conn.ok
            section("a second apply changes nothing")
            for name, host in (("host-a", a), ("host-b", b)):
                again = host.reconciler("apply", str(spec), "--host", name, check=True)
                print(f"{name}: {again.stdout.strip()}")
            print("\nOK" if ok else "\nFAILED")
            return 0 if ok else 1
        finally:
            cluster.close()


if __name__ == "__main__":
    sys.exit(main())
