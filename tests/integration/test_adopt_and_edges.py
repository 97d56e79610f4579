"""Adopted namespaces, privileges, refusals and the lock: edges of the bridge driver, on the real kernel."""

from __future__ import annotations

import pytest
from sandbox import Host

pytestmark = pytest.mark.integration

ADOPT = {
    "version": 1,
    "networks": {"n1": {"subnet": "10.77.0.0/24"}},
    "containers": {
        "a": {"networks": ["n1"]},
        "pod": {"networks": ["n1"], "netns": "/run/netns/podlike"},
    },
}


def test_adopted_namespace_is_wired_resolved_and_never_deleted(host: Host) -> None:
    host.run("ip netns add podlike")
    spec = host.write_spec(ADOPT)
    proc = host.reconciler("apply", str(spec))
    assert proc.returncode == 0, proc.stderr
    assert "eth0" in host.links("podlike")
    host.serve("podlike", 7000, "pod here")
    conn = host.connect("a", "pod", 7000)
    assert conn.ok and conn.data == "pod here\n", conn

    assert host.reconciler("apply", str(spec), "--dry-run", "--exit-code").returncode == 0
    proc = host.reconciler("destroy", str(spec))
    assert proc.returncode == 0, proc.stderr
    assert host.netns_list() == ["podlike"]
    assert host.links("podlike") == {"lo": 1}


def test_missing_adopted_namespace_refuses_before_any_change(host: Host) -> None:
    spec = host.write_spec(ADOPT)
    proc = host.reconciler("apply", str(spec))
    assert proc.returncode == 1
    assert "container pod: /run/netns/podlike is not a network namespace" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert host.netns_list() == []
    assert host.links() == {"lo": 1}
    assert host.nft_tables() == []


def test_foreign_namespace_with_a_container_name_is_refused(host: Host) -> None:
    host.run("ip netns add a")
    before = host.links("a")
    proc = host.reconciler("apply", str(host.write_spec(ADOPT | {"containers": {"a": {"networks": ["n1"]}}})))
    assert proc.returncode == 1
    assert "container a: namespace /run/netns/a exists and is not managed by this spec" in proc.stderr
    assert host.links() == {"lo": 1}
    assert host.links("a") == before


def test_without_privileges_one_line_and_exit_4(host: Host) -> None:
    spec = host.write_spec(ADOPT)
    nobody = ("setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "--")
    proc = host.reconciler("apply", str(spec), prefix=nobody)
    assert proc.returncode == 4, proc.stderr
    expected = "error: this needs root or CAP_NET_ADMIN (it changes network namespaces, links and nftables)"
    assert proc.stderr.strip() == expected


def test_a_second_run_waits_for_the_lock_then_gives_up(host: Host) -> None:
    spec = host.write_spec(ADOPT | {"containers": {"a": {"networks": ["n1"]}}})
    lock = f"{host.state_dir}/lock"
    # A stand-in for a running apply: holds the lock in the background until the sandbox ends.
    host.run(f"mkdir -p {host.state_dir}; (flock {lock} sleep 60) >/dev/null 2>&1 &")
    host.run(f"while flock -n {lock} true; do sleep 0.05; done", timeout=10)
    proc = host.reconciler("apply", str(spec), env={"RECONCILER_LOCK_WAIT": "0.5"})
    assert proc.returncode == 3, proc.stderr
    assert "waiting for another reconciler run" in proc.stderr
    assert "still holds" in proc.stderr
    assert host.links() == {"lo": 1}
