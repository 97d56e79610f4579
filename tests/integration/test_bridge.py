"""The bridge driver against the real kernel, each test in its own sandboxed host (see tests/sandbox.py).

Every check is an outcome a user would see: names resolving, TCP connections succeeding or failing,
interfaces and tables existing or not. Kernel names come from `reconciler show -o json`, not guesses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from sandbox import Host

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SPECS = REPO / "specs"
PETS = SPECS / "pets-bridge.yaml"
ISOLATED = SPECS / "isolated-networks.yaml"
# Expected failures wait this long: a dropped SYN would otherwise cost the default timeout.
BLOCKED_TIMEOUT = 1.5


def apply(host: Host, spec: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = host.reconciler("apply", str(spec), *args)
    assert proc.returncode == 0, f"apply failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def plan(host: Host, spec: Path) -> dict[str, Any]:
    proc = host.reconciler("apply", str(spec), "--dry-run", "-o", "json")
    assert proc.returncode == 0, f"dry run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def address(shown: dict[str, Any], container: str, index: int = 0) -> str:
    """The IPv4 address (without prefix) of a container's INDEX-th interface, from `show -o json`."""
    cidr: str = shown["containers"][container]["interfaces"][index]["address"]
    return cidr.split("/")[0]


def host_ifname(shown: dict[str, Any], container: str, index: int = 0) -> str:
    name: str = shown["containers"][container]["interfaces"][index]["host_ifname"]
    return name


def reached(host: Host, netns: str | None, target: str, port: int, reply: str) -> None:
    conn = host.connect(netns, target, port)
    assert conn.ok and conn.data == reply + "\n", f"{netns or 'host'} -> {target}:{port}: {conn}"


def blocked(host: Host, netns: str | None, target: str, port: int) -> None:
    conn = host.connect(netns, target, port, timeout=BLOCKED_TIMEOUT)
    assert not conn.ok, f"{netns or 'host'} -> {target}:{port} should be blocked, got {conn}"


def without(spec: Path, container: str, workdir: Path) -> Path:
    data = yaml.safe_load(spec.read_text())
    del data["containers"][container]
    out = workdir / f"without-{container}.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def test_specs_validate(host: Host) -> None:
    for spec in (PETS, ISOLATED):
        proc = host.reconciler("validate", str(spec))
        assert proc.returncode == 0, f"{spec.name}: {proc.stderr}"


def test_dry_run_before_first_apply_changes_nothing(host: Host) -> None:
    ruleset = host.run("nft list ruleset").stdout
    forwarding = host.run("sysctl -n net.ipv4.ip_forward").stdout

    proc = host.reconciler("apply", str(PETS), "--dry-run", "--exit-code")

    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Plan:" in proc.stdout and "+ " in proc.stdout, proc.stdout
    assert host.netns_list() == []
    assert host.links() == {"lo": 1}
    assert host.run("nft list ruleset").stdout == ruleset
    assert host.run("sysctl -n net.ipv4.ip_forward").stdout == forwarding
    assert host.run("ls -A /etc/netns").stdout == ""


def test_pets_db_resolves_and_answers_by_name(host: Host) -> None:
    apply(host, PETS)
    shown = host.show(PETS)
    db = address(shown, "db")

    getent = host.run(["getent", "hosts", "db"], netns="web").stdout.split()
    assert getent[0] == db, getent
    host.serve("db", 6379, "+PONG")
    reached(host, "web", "db", 6379, "+PONG")


def test_published_port_reached_from_outside_and_from_host(host: Host) -> None:
    outside = host.add_outside()
    apply(host, PETS)
    host.serve("web", 5000, "pets web")

    reached(host, outside.netns, outside.host_ip, 8000, "pets web")
    reached(host, None, "127.0.0.1", 8000, "pets web")
    reached(host, None, outside.host_ip, 8000, "pets web")
    # Only the published port is forwarded.
    blocked(host, outside.netns, outside.host_ip, 5000)


def test_second_apply_reports_no_changes(host: Host) -> None:
    first = apply(host, PETS)
    assert "Plan:" in first.stdout, first.stdout
    links = {ns: host.links(ns) for ns in (None, "db", "web")}
    ruleset = host.run("nft list ruleset").stdout

    second = apply(host, PETS)
    assert "No changes" in second.stdout, second.stdout
    assert {ns: host.links(ns) for ns in (None, "db", "web")} == links
    assert host.run("nft list ruleset").stdout == ruleset
    assert host.reconciler("apply", str(PETS), "--exit-code").returncode == 0
    assert host.reconciler("apply", str(PETS), "--dry-run", "--exit-code").returncode == 0
    in_sync = plan(host, PETS)
    assert in_sync["actions"] == [] and in_sync["summary"] == {"add": 0, "change": 0, "destroy": 0}, in_sync


def test_containers_reach_each_other_only_on_a_shared_network(host: Host) -> None:
    apply(host, ISOLATED)
    shown = host.show(ISOLATED)
    assert address(shown, "front2") == "172.30.1.20"
    for name in ("front2", "back1"):
        host.serve(name, 7000, name)

    reached(host, "front1", "front2", 7000, "front2")
    reached(host, "front1", "172.30.1.20", 7000, "front2")
    blocked(host, "front1", address(shown, "back1"), 7000)
    blocked(host, "back1", address(shown, "front2"), 7000)
    # Both servers answer the host, so the blocks above are the networks' doing.
    reached(host, None, address(shown, "back1"), 7000, "back1")


def test_icc_false_blocks_neighbours_but_names_resolve(host: Host) -> None:
    apply(host, ISOLATED)
    shown = host.show(ISOLATED)
    quiet2 = address(shown, "quiet2")
    host.serve("quiet2", 7000, "quiet2")

    assert host.run(["getent", "hosts", "quiet2"], netns="quiet1").stdout.split()[0] == quiet2
    blocked(host, "quiet1", quiet2, 7000)
    blocked(host, "quiet1", "quiet2", 7000)
    reached(host, None, quiet2, 7000, "quiet2")


def test_internal_network_has_no_way_out(host: Host) -> None:
    outside = host.add_outside()
    apply(host, ISOLATED)
    shown = host.show(ISOLATED)
    host.serve(outside.netns, 7000, "outside")
    host.serve("sealed2", 7000, "sealed2")

    assert host.default_route("sealed1") == []
    blocked(host, "sealed1", outside.ip, 7000)
    reached(host, "sealed1", "sealed2", 7000, "sealed2")
    # A container of a normal network does get out, so the outside server is reachable.
    assert host.default_route("front1") != []
    reached(host, "front1", outside.ip, 7000, "outside")
    assert address(shown, "sealed1") != address(shown, "sealed2")


def test_drift_repair_recreates_only_the_broken_interface(host: Host) -> None:
    apply(host, PETS)
    shown = host.show(PETS)
    host.serve("db", 6379, "+PONG")
    db_links = host.links("db")
    bridge = shown["networks"]["mybridge"]["bridge"]
    bridge_index = host.links()[bridge]

    host.run(["ip", "link", "del", host_ifname(shown, "web")])
    blocked(host, "web", "db", 6379)

    actions = plan(host, PETS)["actions"]
    assert actions, "the deleted interface is not in the plan"
    assert all(a["id"] == "web" or a["id"].startswith("web/") for a in actions), actions
    assert {a["op"] for a in actions} == {"create"}, actions
    assert "iface" in {a["kind"] for a in actions}, actions

    apply(host, PETS)
    reached(host, "web", "db", 6379, "+PONG")
    assert host.links("db") == db_links
    assert host.links()[bridge] == bridge_index
    assert "No changes" in apply(host, PETS).stdout


def test_adding_a_container_leaves_the_others_untouched(host: Host) -> None:
    apply(host, PETS)
    before = {ns: host.links(ns) for ns in (None, "db", "web")}

    data = yaml.safe_load(PETS.read_text())
    data["containers"]["cache"] = {"networks": ["mybridge"]}
    grown = host.write_spec(data, "pets-with-cache.yaml")
    apply(host, grown)
    shown = host.show(grown)

    after_host = host.links()
    assert {k: after_host[k] for k in before[None]} == before[None]
    assert set(after_host) - set(before[None]) == {host_ifname(shown, "cache")}
    assert host.links("db") == before["db"]
    assert host.links("web") == before["web"]
    host.serve("cache", 6379, "cache")
    reached(host, "web", "cache", 6379, "cache")


def netlink_requests(host: Host, *args: str) -> int:
    """A CLI run's netlink requests, counted by bench/counted.py (the CLI's own code path)."""
    stats = host.workdir / "stats.json"
    env = dict(os.environ, PYTHONPATH=str(REPO), BENCH_STATS=str(stats))
    proc = host.run([sys.executable, "-m", "bench.counted", *args], check=False, env=env)
    assert proc.returncode == 0, f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    count: int = json.loads(stats.read_text())["netlink"]
    return count


def test_an_add_verifies_only_the_namespace_it_touched(host: Host) -> None:
    """Verification after an add re-reads the host level and the new container's namespace, not the
    30 others (engine.touched): the add costs fewer netlink requests beyond a no-op than a no-op's
    whole observation. The added container then answers, and the next plan is empty."""
    many = {
        "version": 1,
        "networks": {"n": {}},
        "containers": {f"c{i}": {"networks": ["n"]} for i in range(30)},
    }
    base = host.write_spec(many, "many.yaml")
    grown = host.write_spec(
        {**many, "containers": {**many["containers"], "new": {"networks": ["n"]}}}, "grown.yaml"
    )
    apply(host, base)
    noop = netlink_requests(host, "apply", str(base))
    add = netlink_requests(host, "apply", str(grown))
    assert add - noop < noop, f"add {add} netlink requests against a no-op's {noop}: a full re-observation"
    assert "No changes" in apply(host, grown).stdout
    host.serve("new", 7000, "new")
    reached(host, "c0", address(host.show(grown), "new"), 7000, "new")


def test_removing_a_container_deletes_only_it(host: Host) -> None:
    apply(host, PETS)
    shown = host.show(PETS)
    web_veth = host_ifname(shown, "web")
    host_links = host.links()
    db_links = host.links("db")

    apply(host, without(PETS, "web", host.workdir))

    assert host.netns_list() == ["db"]
    expected = {name: index for name, index in host_links.items() if name != web_veth}
    assert host.links() == expected
    assert host.links("db") == db_links
    assert host.run("ls -A /etc/netns").stdout.split() == ["db"]
    # Only the hosts file: a DNS lookup would wait for the sandbox's unreachable resolver.
    getent = host.run(["getent", "-s", "files", "hosts", "web"], netns="db", check=False)
    assert getent.returncode != 0, getent.stdout


FOREIGN_NFT = """
add table inet foreign
add chain inet foreign c { type filter hook forward priority 10; policy accept; }
add rule inet foreign c tcp dport 9999 accept
"""


def foreign_snapshot(host: Host, ours: set[str]) -> dict[str, str]:
    namespaces = [
        line for line in host.run("ip netns list").stdout.splitlines() if line.split()[0] not in ours
    ]
    return {
        "bridge": host.run("ip -d addr show br-foreign").stdout,
        "netns": "\n".join(namespaces),
        "nft": host.run("nft list table inet foreign").stdout,
    }


def test_foreign_objects_survive_apply_and_destroy(host: Host) -> None:
    host.run("ip link add br-foreign type bridge && ip addr add 192.0.2.1/24 dev br-foreign")
    host.run("ip netns add foreignns")
    host.run(["nft", "-f", "-"], input=FOREIGN_NFT)
    ours = set(yaml.safe_load(PETS.read_text())["containers"])
    before = foreign_snapshot(host, ours)
    assert "foreignns" in before["netns"] and "dport 9999" in before["nft"]

    apply(host, PETS)
    assert foreign_snapshot(host, ours) == before

    proc = host.reconciler("destroy", str(PETS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert foreign_snapshot(host, ours) == before
    assert host.netns_list() == ["foreignns"]
    assert host.nft_tables() == ["inet foreign"]


def test_destroy_removes_everything_it_created(host: Host) -> None:
    apply(host, PETS)
    assert host.netns_list() == ["db", "web"]
    assert any(t.split()[1].startswith("netreconciler") for t in host.nft_tables()), host.nft_tables()

    proc = host.reconciler("destroy", str(PETS))
    assert proc.returncode == 0, proc.stdout + proc.stderr

    assert host.netns_list() == []
    assert host.links() == {"lo": 1}
    assert host.nft_tables() == []
    assert host.run("ls -A /etc/netns").stdout == ""
    # The lock file may stay: removing it would race with a run that is about to take it.
    leftovers = host.run(["find", host.state_dir, "-mindepth", "1", "-not", "-name", "lock"]).stdout
    assert leftovers == "", f"state files left after destroy:\n{leftovers}"
    # Destroying what is gone is a no-op, not an error.
    assert host.reconciler("destroy", str(PETS)).returncode == 0
