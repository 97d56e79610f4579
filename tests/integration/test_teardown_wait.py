"""The wait for host veths the kernel takes down with their namespace (apply.context.Context.wait_gone),
against the real kernel: it ends when the kernel announces the link deleted, when the name is gone
without an announcement (renamed away), and after its bound deletes what is left, saying so."""

from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest
from sandbox import REPO, Host

pytestmark = pytest.mark.integration

# Runs inside the sandbox: for each case a veth pair, something done to it 0.2 s into the wait (or
# nothing), and what the wait saw: whether the name is left, the notices, and its seconds.
DRIVER = textwrap.dedent(
    """
    import json, os, subprocess, threading, time
    from reconciler.apply import context
    from reconciler.apply.context import Context
    from reconciler.nft import Nft
    context.TEARDOWN_WAIT = 3.0
    actions = {
        "wdel": ["ip", "link", "del", "wdel"],
        "wren": ["ip", "link", "set", "wren", "name", "wrenx"],
        "wkep": None,
    }
    out = {}
    for name, action in actions.items():
        subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"], check=True)
        ctx = Context("default", Nft())

        def later(action=action):
            time.sleep(0.2)
            if action:
                subprocess.run(action, check=True)

        worker = threading.Thread(target=later)
        worker.start()
        start = time.monotonic()
        ctx.wait_gone({name})
        took = time.monotonic() - start
        worker.join()
        out[name] = [os.path.exists("/sys/class/net/" + name), ctx.notices, took]
        ctx.close()
    # What the socket hears: a bridge port leaving its bridge (an AF_BRIDGE RTM_DELLINK) is no
    # deletion; the link's own deletion is.
    from reconciler.linkevents import Deletions
    for cmd in (
        "ip link add hbr type bridge", "ip link add hport type veth peer name hpeer",
        "ip link set hport master hbr",
    ):
        subprocess.run(cmd.split(), check=True)
    with Deletions() as heard:
        subprocess.run("ip link set hport nomaster".split(), check=True)
        unplugged = heard.wait(0.5)
        subprocess.run("ip link del hport".split(), check=True)
        deleted = set()
        deadline = time.monotonic() + 10
        while "hport" not in deleted and time.monotonic() < deadline:
            deleted |= heard.wait(1.0) or set()
    out["heard"] = [sorted(unplugged or ()), sorted(deleted)]
    print(json.dumps(out))
    """
)


def test_the_wait_ends_on_the_deletion_a_rename_or_its_bound(host: Host) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = json.loads(host.run([sys.executable, "-c", DRIVER], env=env).stdout.splitlines()[-1])
    for name in ("wdel", "wren"):
        exists, notices, took = out[name]
        assert not exists and notices == [], (name, out[name])
        assert 0.2 <= took < 3.0, (name, took)  # ended by what happened, not by the bound
    exists, notices, took = out["wkep"]
    assert not exists and took >= 3.0, out["wkep"]  # the bound passed: deleted by us
    assert len(notices) == 1 and notices[0].startswith("the kernel kept wkep after its namespace"), notices
    unplugged, deleted = out["heard"]
    assert "hport" not in unplugged and "hport" in deleted, out["heard"]
    links = host.links()
    assert "wrenx" in links and not {"wdel", "wdelp", "wkep", "wkepp"} & links.keys(), links
