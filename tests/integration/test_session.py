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
    assert reach(old, new) == {"c"}
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


# Runs inside the sandbox: one session, the specs in a row; prints each plan and, before the first
# and after each, every container's host veth index, namespace inode and hosts file (inode, mtime).
PART_DRIVER = textwrap.dedent(
    """
    import json, os, sys
    from reconciler import names
    from reconciler.engine import state_dir_from
    from reconciler.session import Session
    from reconciler.specload import load_spec

    def snapshot(spec):
        out = {}
        for c in spec.containers:
            veth = names.host_veth_ifname("default", c, "net")
            hosts = os.stat(os.path.join(names.ETC_NETNS_DIR, c, "hosts"))
            out[c] = [
                open(f"/sys/class/net/{veth}/ifindex").read().strip(),
                os.stat(names.netns_path(c)).st_ino,
                [hosts.st_ino, hosts.st_mtime_ns],
            ]
        return out

    session = Session(state_dir_from(None))
    plans, snapshots = [], []
    for path in sys.argv[1:]:
        spec = load_spec(path)
        outcome = session.apply(spec)
        plans.append([[a.op, a.resource.kind, a.resource.id] for a in outcome.actions])
        snapshots.append(snapshot(spec))
    print(json.dumps([plans, snapshots]))
    """
)


def one_network(n: int, **more: dict[str, object]) -> dict[str, object]:
    containers: dict[str, object] = {
        f"c{i}": {"networks": ["net"], "ports": [f"{20000 + i}:80"]} for i in range(n)
    }
    return {
        "version": 1,
        "networks": {"net": {"subnet": "10.70.0.0/24"}},
        "containers": {**containers, **more},
    }


def test_a_part_leaves_the_other_members_alone_and_allocates_around_them(host: Host) -> None:
    """50 containers on one network: adding one touches its own objects only; a static address that
    another member holds moves that member (as a whole plan would), nobody else; the record and the
    kernel hold every address once, and a full plan afterwards finds nothing to do."""
    base = host.write_spec(one_network(50), "base.yaml")
    plus = host.write_spec(one_network(50, new={"networks": ["net"], "ports": ["30000:80"]}), "plus.yaml")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = host.run([sys.executable, "-c", PART_DRIVER, str(base), str(plus)], env=env, timeout=300).stdout
    (cold, added), (before, after) = json.loads(out.splitlines()[-1])
    assert len(cold) > 50 * 3
    assert {a[2] for a in added if a[1] != "nft-element"} == {"new", "new/net"}
    assert {(op, kind) for op, kind, _ in added} <= {
        ("create", k) for k in ("netns", "iface", "route", "hosts", "nft-element")
    }
    assert len([a for a in added if a[1] == "nft-element"]) == 2  # its port's two map elements
    assert {c: after[c] for c in before} == before  # every other member's veth, namespace, hosts file
    record = json.loads(host.run(["cat", f"{host.state_dir}/default.json"]).stdout)
    addresses = record["networks"]["net"]["addresses"]
    assert set(addresses) == {*before, "new"} and len(set(addresses.values())) == 51
    # A static address another member holds: that member moves, nobody else is touched.
    holder = next(c for c, a in addresses.items() if a == "10.70.0.5")
    pinned = {"networks": {"net": {"ipv4_address": "10.70.0.5"}}}
    pin = host.write_spec(
        one_network(50, new={"networks": ["net"], "ports": ["30000:80"]}, pin=pinned), "pin.yaml"
    )
    out = host.run([sys.executable, "-c", PART_DRIVER, str(plus), str(pin)], env=env, timeout=300).stdout
    (noop, moved), (before, after) = json.loads(out.splitlines()[-1])
    assert noop == []  # a fresh session finds the host as the last one left it
    assert {a[2].split("/")[0] for a in moved if a[1] != "nft-element"} == {"pin", holder}
    assert {c: after[c] for c in before if c != holder} == {c: x for c, x in before.items() if c != holder}
    record = json.loads(host.run(["cat", f"{host.state_dir}/default.json"]).stdout)
    addresses = record["networks"]["net"]["addresses"]
    assert addresses["pin"] == "10.70.0.5" and addresses[holder] != "10.70.0.5"
    assert len(set(addresses.values())) == len(addresses) == 52
    shown = host.show(pin)["containers"]
    kernel = [i["address"] for c in shown.values() for i in c["interfaces"]]
    assert len(kernel) == 52 and len(set(kernel)) == 52
    check = host.reconciler("apply", str(pin), "--dry-run", "--exit-code")
    assert check.returncode == 0, check.stdout + check.stderr


# Runs inside the sandbox: a session applies ONE, someone makes the namespace TWO's container would
# take, and the session applies TWO; prints the error and whether that namespace is still there.
FOREIGN_DRIVER = textwrap.dedent(
    """
    import json, os, subprocess, sys
    from reconciler.engine import state_dir_from
    from reconciler.errors import ReconcilerError
    from reconciler.session import Session
    from reconciler.specload import load_spec
    session = Session(state_dir_from(None))
    session.apply(load_spec(sys.argv[1]))
    subprocess.run(["ip", "netns", "add", "c"], check=True)
    try:
        session.apply(load_spec(sys.argv[2]))
        error = None
    except ReconcilerError as e:
        error = str(e)
    print(json.dumps([error, os.path.exists("/run/netns/c")]))
    """
)


def test_a_part_refuses_a_namespace_someone_made_where_its_container_goes(host: Host) -> None:
    """Memory does not see a namespace made by hand (no event comes): the part looks at the places
    its new containers take, and refuses as a whole plan does, leaving that namespace alone."""
    one = host.write_spec(spec("a", "b"), "one.yaml")
    two = host.write_spec(spec("a", "b", "c"), "two.yaml")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = host.run([sys.executable, "-c", FOREIGN_DRIVER, str(one), str(two)], env=env).stdout
    error, kept = json.loads(out.splitlines()[-1])
    assert error is not None and "namespace /run/netns/c exists and is not managed by this spec" in error
    assert kept, "the foreign namespace was removed"
    assert host.netns_list() == ["a", "b", "c"]


# Runs inside the sandbox: a plan that found /run/netns/b free, carried out after someone took it
# (the race no check before the apply can close); prints the error and whether the namespace lives.
TAKEN_DRIVER = textwrap.dedent(
    """
    import json, os, subprocess
    from reconciler.apply.context import Context
    from reconciler.diff import Action
    from reconciler.engine import state_dir_from
    from reconciler.errors import RolledBack
    from reconciler.journal import Journal
    from reconciler.model import Netns, State
    from reconciler.nft import Nft
    from reconciler.rollback import Verification, apply_verified
    subprocess.run(["ip", "netns", "add", "b"], check=True)
    state_dir = state_dir_from(None)
    journal = Journal(state_dir, "default")
    created = Netns(container="b", path="/run/netns/b")
    check = Verification(State({created.key: created}), State({}), lambda: State({}))
    error = None
    try:
        apply_verified(Context("default", Nft()), journal, [Action("create", created)], check)
    except RolledBack as e:
        error = str(e)
    print(json.dumps([error, os.path.ismount("/run/netns/b"), journal.path.exists()]))
    """
)


def test_a_create_that_finds_its_place_taken_leaves_what_took_it(host: Host) -> None:
    """The journal names what an apply creates, and a rollback deletes what it names unmarked (a
    crash's leftovers). A namespace that was someone else's before our create is not ours: the
    rollback leaves it."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = host.run([sys.executable, "-c", TAKEN_DRIVER], env=env).stdout
    error, mounted, journaled = json.loads(out.splitlines()[-1])
    assert mounted, "the rollback deleted a namespace it did not create"
    assert error is not None and "netns b: File exists" in error
    assert not journaled
    assert host.netns_list() == ["b"]


# Runs inside the sandbox: one session, the specs in a row; after each apply, at once: whether the
# record it keeps, a fresh load and the file agree, the record's containers, and which of a..d's host
# veths the kernel still has.
RECORD_DRIVER = textwrap.dedent(
    """
    import json, os, sys
    from reconciler import names
    from reconciler.engine import state_dir_from
    from reconciler.session import Session
    from reconciler.specload import load_spec
    from reconciler.statedir import ScopeRecord, StateDir
    session = Session(state_dir_from(None))
    out = []
    for path in sys.argv[1:]:
        session.apply(load_spec(path))
        veths = sorted(
            c for c, n in (("a", "n1"), ("b", "n1"), ("c", "n1"), ("d", "n2"))
            if os.path.exists("/sys/class/net/" + names.host_veth_ifname("default", c, n))
        )
        kept = session.state_dir.load("default")
        with open(session.state_dir.path / "default.json") as f:
            on_disk = ScopeRecord.from_json(json.load(f))
        same = kept == StateDir(session.state_dir.path).load("default") == on_disk
        held = sorted(c for rec in kept.networks.values() for c in rec.addresses)
        out.append([same, held, veths])
    print(json.dumps(out))
    """
)


def test_a_removal_returns_once_the_veth_is_gone_and_the_record_is_what_a_load_reads(host: Host) -> None:
    """The kernel takes a deleted namespace's veth down in the background: the apply waits for the
    kernel's word that it went (not a dump of every veth), so the host shows the removal when it
    returns. The record the session keeps is the file's content, as a fresh load reads it."""
    three = host.write_spec(spec("a", "b", "c", "d"), "three.yaml")
    two = host.write_spec(spec("a", "b", "d"), "two.yaml")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    argv = [sys.executable, "-c", RECORD_DRIVER, str(three), str(two), str(three), str(two)]
    steps = json.loads(host.run(argv, env=env).stdout.splitlines()[-1])
    assert steps == [
        [True, ["a", "b", "c", "d"], ["a", "b", "c", "d"]],
        [True, ["a", "b", "d"], ["a", "b", "d"]],
        [True, ["a", "b", "c", "d"], ["a", "b", "c", "d"]],
        [True, ["a", "b", "d"], ["a", "b", "d"]],
    ]
    check = host.reconciler("apply", str(two), "--dry-run", "--exit-code")
    assert check.returncode == 0, check.stdout + check.stderr
