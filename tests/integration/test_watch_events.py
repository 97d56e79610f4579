"""The daemon's event source against the real kernel: lost events are reported, not silently missed.

A receive buffer far too small for a burst of real link events (made while the reader is stopped)
makes the kernel drop some and say so
(ENOBUFS): the source must turn that into a "full" hint (the daemon resyncs at once) and dump the
links again, so an event on a link of ours that only the dump can name is still attributed. Events
inside a container namespace come through the same socket, tagged with the namespace's id.
"""

from __future__ import annotations

import json
import os
import sys

import pytest
from sandbox import REPO, Host

pytestmark = pytest.mark.integration

OVERFLOW = r"""
import json, os, subprocess, sys, time
from reconciler.watch.events import Events

def ip(*args):
    subprocess.run(["ip", *args], check=True)

# A link of ours made before the source starts: only its dump can map its index to web.
ip("link", "add", "ours0", "type", "veth", "peer", "name", "ours1")
ip("link", "set", "ours0", "alias", "netreconciler:default:veth:web/front")
hints = []
source = Events("default", hints.append, rcvbuf=4096)
source.start()

def wait(what, check):
    end = time.monotonic() + 30
    while not check():
        if time.monotonic() > end:
            sys.exit(f"timed out waiting for {what}: {hints}")
        time.sleep(0.01)

# Seeded first: from here on, events on links not ours give no hint at all; only the overflow does.
wait("the first dump", lambda: source.seeded)
assert not hints, hints
# The burst comes while this process (so the reading thread) is stopped: the queue must overflow.
with open("/tmp/burst", "w") as f:
    f.write("".join(f"link add burst{i} type veth peer name burstp{i}\n" for i in range(500)))
script = f"kill -STOP {os.getpid()}; ip -batch /tmp/burst; kill -CONT {os.getpid()}"
subprocess.run(["sh", "-c", script], check=True)
wait("the overflow to be reported and the links dumped again",
     lambda: any(h.full for h in hints) and source.seeded)
lost = sum(h.full for h in hints)
del hints[:]
ip("addr", "add", "10.9.9.1/32", "dev", "ours0")
wait("the address event", lambda: any(h.containers for h in hints))
ip("netns", "add", "web")
source.follow({"/run/netns/web": "web"})
ip("-n", "web", "link", "set", "lo", "up")
wait("the event inside web", lambda: any(h.containers == {"web"} and h.at > 0 for h in hints[1:]))
print(json.dumps({"lost": lost, "containers": sorted({c for h in hints for c in h.containers})}))
"""


def test_lost_events_force_a_full_resync_and_a_new_dump(host: Host) -> None:
    # Under `timeout`: nsenter stops itself when its direct child stops (job control), and would stay
    # stopped; `timeout` bounds the run as well.
    argv = ["timeout", "60", sys.executable, "-c", OVERFLOW]
    proc = host.run(argv, env={"PYTHONPATH": str(REPO)}, timeout=120)
    result = json.loads(proc.stdout)
    assert result["lost"] >= 1, result
    assert result["containers"] == ["web"], result


PART = r"""
import json, subprocess, sys, time
from reconciler.watch.events import Events

def ip(*args):
    subprocess.run(["ip", *args], check=True)

hints = []
source = Events("default", hints.append)
source.start()
end = time.monotonic() + 30
while not source.seeded:
    if time.monotonic() > end:
        sys.exit("timed out waiting for the first dump")
    time.sleep(0.01)

def seen(container):
    # Each namespace's event since the last look, named by its container (or by nothing).
    del hints[:]
    ip("-n", container, "link", "set", "lo", "down")
    ip("-n", container, "link", "set", "lo", "up")
    end = time.monotonic() + 30
    while not any(h.containers == {container} for h in hints):
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True

for name in ("a", "b", "c"):
    ip("netns", "add", name)
source.follow({f"/run/netns/{n}": n for n in ("a", "b")})
# A part's follow (c added, b removed): c is looked up, a keeps the id the full follow found.
source.follow({"/run/netns/c": "c"}, frozenset({"b", "c"}))
out = {n: seen(n) for n in ("a", "c")}
# b left the part's spec: its events name nobody (checked by a known event after b's).
del hints[:]
ip("-n", "b", "link", "set", "lo", "down")
out["b"] = not seen("a") or any(h.containers == {"b"} for h in hints)
print(json.dumps(out))
"""


def test_a_parts_follow_looks_up_only_its_namespaces_and_keeps_the_others(host: Host) -> None:
    proc = host.run(["timeout", "60", sys.executable, "-c", PART], env={"PYTHONPATH": str(REPO)}, timeout=120)
    assert json.loads(proc.stdout) == {"a": True, "c": True, "b": False}, proc.stdout


TABLES = r"""
import json, subprocess
from reconciler.watch.events import Events

hints = []
source = Events("default", hints.append)
source.start()
seen = {}
for family in ("inet", "ip", "ip6", "bridge"):
    subprocess.run(["nft", "add", "table", family, "someone_else"], check=True)
    assert source.catch_up()
    foreign = [h for h in hints if h.nft]
    subprocess.run(["nft", "add", "table", family, "netreconciler"], check=True)
    # No wait but the catch-up: it returns once every event queued before it was read.
    assert source.catch_up()
    seen[family] = {"foreign": len(foreign), "ours": sum(h.nft for h in hints)}
    del hints[:]
print(json.dumps(seen))
"""


def test_changes_to_our_tables_of_every_family_are_hinted_by_the_catch_up(host: Host) -> None:
    """A change to our table of any family (the overlay's are `ip` and `ip6`) is a hint, another
    table's is not, and a catch-up returns only after the thread read the events queued before it."""
    env = {"PYTHONPATH": str(REPO), "PATH": os.environ["PATH"]}
    proc = host.run([sys.executable, "-c", TABLES], env=env, timeout=60)
    seen = json.loads(proc.stdout)
    assert seen == {f: {"foreign": 0, "ours": 1} for f in ("inet", "ip", "ip6", "bridge")}, seen


LINK_LOCAL = r"""
import json, subprocess
from reconciler.watch.events import Events

def ip(*args):
    subprocess.run(["ip", *args], check=True)

ip("netns", "add", "web")
ip("-n", "web", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
hints = []
source = Events("default", hints.append)
source.start()
source.follow({"/run/netns/web": "web"})
seen = {}
for what, address in (("link_local", "fe80::5/64"), ("global", "2001:db8::5/64")):
    ip("-n", "web", "addr", "add", address, "dev", "eth0", "nodad")
    assert source.catch_up()
    seen[what] = sorted({c for h in hints for c in h.containers})
    del hints[:]
print(json.dumps(seen))
"""


def test_the_kernels_own_ipv6_link_local_addresses_in_a_container_are_no_hint(host: Host) -> None:
    """An IPv6 link-local address (the kernel adds one to every interface it brings up, and its DAD
    ends long after our apply) is nothing we compare; a global one is."""
    env = {"PYTHONPATH": str(REPO), "PATH": os.environ["PATH"]}
    proc = host.run([sys.executable, "-c", LINK_LOCAL], env=env, timeout=60)
    assert json.loads(proc.stdout) == {"link_local": [], "global": ["web"]}, proc.stdout
