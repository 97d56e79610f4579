"""The compiled-spec cache (reconciler/speccache.py) against the real kernel: a run that takes the
spec from the cache plans and prints exactly what a run that compiles it does, every input of the
compiled form invalidates it, a broken cache file is ignored, and drift is still seen and repaired.

Whether a run hit the cache: a miss compiles and writes the entry anew (by rename, a new inode);
a hit leaves the file alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sandbox import Host

pytestmark = pytest.mark.integration

SPEC = """\
version: 1
name: pets
networks:
  mybridge: {driver: bridge}
  back: {driver: bridge, subnet: 10.77.0.0/24}
containers:
  db: {networks: [mybridge, back]}
  web:
    networks: [mybridge]
    ports: ["8000:5000"]
"""
CACHE = "/var/lib/reconciler/cache"
REPO = Path(__file__).resolve().parents[2]
# What a hit never imports (a miss imports all of them).
SKIPPED = ("pydantic", "reconciler.spec", "reconciler.specload", "yaml")


def run(host: Host, *args: str) -> subprocess.CompletedProcess[str]:
    return host.reconciler(*args, "--local")


def entry(host: Host) -> str:
    """The cache entry's inode ("" when there is none)."""
    return host.run(f"stat -c %i {CACHE}/* 2>/dev/null || true").stdout.strip()


def forget(host: Host) -> None:
    host.run(["rm", "-rf", CACHE])


def outputs(host: Host, spec: Path) -> list[tuple[int, str, str]]:
    """Every way of printing a plan, as the user sees it."""
    runs = [
        ("apply", str(spec), "--dry-run"),
        ("apply", str(spec), "--dry-run", "-o", "json"),
        ("apply", str(spec), "--dry-run", "--exit-code"),
    ]
    return [(p.returncode, p.stdout, p.stderr) for p in (run(host, *r) for r in runs)]


def applied(host: Host, spec: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = run(host, "apply", str(spec), *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def host_veth(host: Host, spec: Path, container: str) -> str:
    return str(host.show(spec)["containers"][container]["interfaces"][0]["host_ifname"])


def test_a_hit_prints_what_a_miss_prints_in_sync_and_after_drift(host: Host) -> None:
    spec = host.write_spec(SPEC)
    applied(host, spec)
    kept = entry(host)
    assert kept, "a successful apply keeps the compiled spec"
    assert host.run(f"stat -c %a {CACHE}").stdout.strip() == "700"
    assert host.run(f"stat -c %a {CACHE}/*").stdout.strip() == "600"
    hit = outputs(host, spec)
    assert entry(host) == kept, "the runs above compiled the spec: no hit"
    forget(host)
    assert outputs(host, spec) == hit
    assert "No changes" in hit[0][1] and hit[2][0] == 0

    applied(host, spec)
    kept = entry(host)
    host.run(["ip", "link", "del", host_veth(host, spec, "web")])
    host.run(["ip", "-n", "db", "addr", "flush", "dev", "eth1"])
    host.run(["ip", "-n", "db", "route", "del", "default"])
    drifted = outputs(host, spec)
    assert entry(host) == kept
    forget(host)
    assert outputs(host, spec) == drifted
    plan = json.loads(drifted[1][1])
    assert {a["id"] for a in plan["actions"]} >= {"web/mybridge", "db/back", "db"}, plan["actions"]
    assert drifted[2][0] == 2  # --exit-code: changes pending


def test_a_hit_repairs_kernel_drift(host: Host) -> None:
    spec = host.write_spec(SPEC)
    applied(host, spec)
    kept = entry(host)
    veth = host_veth(host, spec, "web")
    host.run(["ip", "link", "del", veth])
    assert veth not in host.links()

    repaired = applied(host, spec)
    assert entry(host) == kept, "the repair compiled the spec again"
    assert "Plan:" in repaired.stdout, repaired.stdout
    assert veth in host.links()
    assert "No changes" in applied(host, spec).stdout
    assert entry(host) == kept


@pytest.mark.parametrize("change", ["spec", "record", "record deleted", "host option", "corrupt", "foreign"])
def test_every_input_invalidates_and_a_broken_cache_is_ignored(host: Host, change: str) -> None:
    spec = host.write_spec(SPEC)
    applied(host, spec)
    kept = entry(host)
    args: tuple[str, ...] = ()
    if change == "spec":
        spec.write_text(SPEC.replace('"8000:5000"', '"8001:5000"'))
    elif change == "record":
        record = json.loads(host.run(["cat", "/var/lib/reconciler/pets.json"]).stdout)
        record["networks"]["back"]["addresses"]["db"] = "10.77.0.9"
        host.run(["sh", "-c", "cat > /var/lib/reconciler/pets.json"], input=json.dumps(record))
    elif change == "record deleted":
        host.run(["rm", "/var/lib/reconciler/pets.json"])
    elif change == "host option":
        args = ("--host", "elsewhere")
    elif change == "corrupt":
        host.run(f"for f in {CACHE}/*; do head -c 100 $f > $f.x; mv $f.x $f; done")
    else:  # a file others may write is not trusted, whatever it holds
        host.run(f"chmod 666 {CACHE}/*")

    uncached = outputs(host, spec) if change != "host option" else None
    forget(host)
    if uncached is not None:
        assert outputs(host, spec) == uncached
    proc = run(host, "apply", str(spec), *args)
    if change == "host option":
        assert proc.returncode == 1, proc.stderr
        assert "--host elsewhere: the spec declares no hosts" in proc.stderr, proc.stderr
        return
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert entry(host) not in ("", kept)
    if change == "spec":
        assert "8001" in proc.stdout, proc.stdout
    if change == "record":
        assert "10.77.0.9" in host.run(["ip", "-n", "db", "addr", "show", "eth1"]).stdout
    assert "No changes" in applied(host, spec).stdout


def test_host_prefixes_in_use_are_an_input(host: Host) -> None:
    """IPAM avoids the host's prefixes: a new one on a foreign interface compiles the spec again."""
    spec = host.write_spec(SPEC)
    applied(host, spec)
    kept = entry(host)
    host.run("ip link add lan0 type veth peer name lan1 && ip addr add 10.200.0.1/24 dev lan0")
    assert "No changes" in applied(host, spec).stdout
    assert entry(host) not in ("", kept)


def test_a_spec_error_is_reported_as_without_cache(host: Host) -> None:
    spec = host.write_spec(SPEC)
    applied(host, spec)
    spec.write_text(SPEC.replace("driver: bridge, subnet", "driver: bridge, subnett"))
    cached = run(host, "apply", str(spec))
    forget(host)
    assert cached.returncode == 1 and "subnett" in cached.stderr, cached.stderr
    proc = run(host, "apply", str(spec))
    assert (proc.returncode, proc.stdout, proc.stderr) == (cached.returncode, cached.stdout, cached.stderr)


def test_destroy_forgets_the_compiled_spec(host: Host) -> None:
    spec = host.write_spec(SPEC)
    applied(host, spec)
    assert host.reconciler("destroy", str(spec)).returncode == 0
    assert host.run(["ls", "-A", "/var/lib/reconciler"]).stdout.split() == ["lock"]


def test_a_hit_reads_no_yaml(host: Host) -> None:
    """What a hit skips: neither the YAML loader nor the spec's validation nor its models (pydantic)
    are imported, by the modules on its path or by unpickling the entry, with or without --dry-run."""
    spec = host.write_spec(SPEC)
    applied(host, spec)
    probe = (
        "import sys; from reconciler.cli import main; rc = main(sys.argv[1:]); "
        f"print(sorted(m for m in {SKIPPED!r} if m in sys.modules)); sys.exit(rc)"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for args in ([], ["--dry-run"]):
        hit = host.run([sys.executable, "-c", probe, "apply", str(spec), "--local", *args], env=env)
        assert hit.returncode == 0, hit.stdout + hit.stderr
        assert hit.stdout.splitlines()[-1] == "[]", hit.stdout
    forget(host)
    miss = host.run([sys.executable, "-c", probe, "apply", str(spec), "--local"], env=env)
    assert miss.stdout.splitlines()[-1] == repr(sorted(SKIPPED)), miss.stdout
