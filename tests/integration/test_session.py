"""In-process reconciling against a kept observed state (reconciler.session): a daemon's path.

The session observes once, then plans each new spec against the state its own applies produced. The
checks: an incremental apply touches only the changed container's objects, the host it leaves is
exactly what a fresh observation sees (the CLI then finds nothing to do), and the new container's
published port answers.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest
from sandbox import REPO, Host

pytestmark = pytest.mark.integration


def spec(*containers: str, port_of_a: int = 8000) -> dict[str, object]:
    """a, b, c on n1; d on n2, which no change here reaches."""
    ports = {"a": f"{port_of_a}:80", "b": "8001:80", "c": "8002:80", "d": "8003:80"}
    return {
        "version": 1,
        "networks": {"n1": {"subnet": "172.30.0.0/24"}, "n2": {"subnet": "172.30.1.0/24"}},
        "containers": {
            c: {"networks": ["n2" if c == "d" else "n1"], "ports": [ports[c]]} for c in containers
        },
    }


# Runs inside the sandbox: one session, three specs in a row; prints each plan's (op, kind, id).
DRIVER = textwrap.dedent(
    """
    import json, sys
    from reconciler.engine import state_dir_from
    from reconciler.session import Session
    from reconciler.specload import load_spec
    session = Session(state_dir_from(None))
    plans = []
    for path in sys.argv[1:]:
        outcome = session.apply(load_spec(path))
        plans.append([[a.op, a.resource.kind, a.resource.id] for a in outcome.actions])
    print(json.dumps(plans))
    """
)


def test_session_applies_only_what_changed_and_leaves_the_host_converged(host: Host) -> None:
    two = host.write_spec(spec("a", "b", "d"), "two.yaml")
    three = host.write_spec(spec("a", "b", "c", "d"), "three.yaml")
    moved = host.write_spec(spec("a", "b", "c", "d", port_of_a=9000), "moved.yaml")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = host.run([sys.executable, "-c", DRIVER, str(two), str(three), str(moved)], env=env).stdout
    first, added, changed = json.loads(out.splitlines()[-1])
    assert ["create", "netns", "c"] not in first
    touched = {(op, kind) for op, kind, _ in added}
    assert ["create", "netns", "c"] in added and ["create", "iface", "c/n1"] in added
    assert {kind for _, kind, _ in added} <= {"netns", "iface", "route", "hosts", "nft-element"}
    assert ("delete", "nft-table") not in touched and ("create", "nft-table") not in touched
    assert not [a for a in added if a[2] in ("a", "b", "a/n1", "b/n1") and a[1] != "hosts"]
    assert not [a for a in added + changed if a[2] in ("d", "d/n2")]
    # The port change is two map elements out and two in, nothing else.
    assert sorted((op, kind) for op, kind, _ in changed) == [
        ("create", "nft-element"),
        ("create", "nft-element"),
        ("delete", "nft-element"),
        ("delete", "nft-element"),
    ]
    # A fresh observation agrees with the state the session kept, and the record still holds d, which
    # the partial plans never looked at.
    check = host.reconciler("apply", str(moved), "--dry-run", "--exit-code")
    assert check.returncode == 0, check.stdout + check.stderr
    record = json.loads(host.run(["cat", f"{host.state_dir}/default.json"]).stdout)
    assert set(record["networks"]["n1"]["addresses"]) == {"a", "b", "c"}
    assert set(record["networks"]["n2"]["addresses"]) == {"d"}
    shown = host.show(moved)
    target = shown["containers"]["c"]["interfaces"][0]["address"].split("/")[0]
    host.serve("c", 80, "from c")
    conn = host.connect(None, target, 80)
    assert conn.ok and conn.data == "from c\n", conn
    conn = host.connect(None, "127.0.0.1", 8002)
    assert conn.ok and conn.data == "from c\n", conn


def test_reach_is_the_changed_containers_and_their_networks_members() -> None:
    from reconciler.session import reach
    from reconciler.spec import Spec

    old, new = Spec.model_validate(spec("a", "b", "d")), Spec.model_validate(spec("a", "b", "c", "d"))
    assert reach(old, new) == {"a", "b", "c"}
    assert reach(new, new) == set()
    assert reach(old, Spec.model_validate(spec("a", "b"))) == {"d"}
    assert reach(old, Spec.model_validate({**spec("a", "b", "d"), "name": "other"})) is None
    assert reach(Spec.model_validate(spec("d")), Spec.model_validate(spec())) is None  # reaches everyone


def test_advance_applies_a_plan_to_the_kept_state() -> None:
    from reconciler.diff import plan
    from reconciler.model import HostsFile, Netns, State
    from reconciler.session import advance

    observed = State()
    for res in (Netns("a", "/run/netns/a"), Netns("gone", "/run/netns/gone"), HostsFile("a", "old")):
        observed.add(res)
    desired = State()
    for res in (Netns("a", "/run/netns/a"), Netns("new", "/run/netns/new"), HostsFile("a", "new")):
        desired.add(res)
    advance(observed, plan(desired, observed))
    assert observed.resources == desired.resources
