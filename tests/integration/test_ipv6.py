"""IPv6 on bridge networks against the real kernel: dual-stack and IPv6-only networks, names of both
families, published ports over IPv6, NAT66, isolation, and the router-advertisement hazard of
switching IPv6 forwarding on. Each test runs in its own sandboxed host (tests/sandbox.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from sandbox import Host, Outside

pytestmark = pytest.mark.integration

BLOCKED_TIMEOUT = 1.5
HOST6, OUTSIDE6 = "2001:db8:100::1", "2001:db8:100::2"

SPEC: dict[str, Any] = {
    "version": 1,
    "networks": {
        "front": {"subnet": ["172.28.1.0/24", "fd00:28:1::/64"], "gateway": ["172.28.1.1", "fd00:28:1::1"]},
        "auto": {"ipv6": True},
        "v6only": {"subnet": "fd00:28:9::/64"},
        "sealed": {"subnet": ["172.28.3.0/24", "fd00:28:3::/64"], "internal": True},
        "quiet": {"subnet": ["172.28.4.0/24", "fd00:28:4::/64"], "icc": False},
    },
    "containers": {
        "web": {
            "networks": {
                "front": {"ipv4_address": "172.28.1.10", "ipv6_address": "fd00:28:1::10", "aliases": ["www"]}
            },
            "ports": ["8080:80", f"[{HOST6}]:8443:443"],
        },
        "client": {"networks": ["front", "auto"]},
        "lone": {"networks": ["auto"]},
        "v6a": {"networks": ["v6only"], "ports": ["9090:90"]},
        "v6b": {"networks": ["v6only"]},
        "sealed1": {"networks": ["sealed"]},
        "sealed2": {"networks": ["sealed"]},
        "quiet1": {"networks": ["quiet"]},
        "quiet2": {"networks": ["quiet"]},
    },
}


def apply(host: Host, spec: Path) -> subprocess.CompletedProcess[str]:
    proc = host.reconciler("apply", str(spec))
    assert proc.returncode == 0, f"apply failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def reached(host: Host, netns: str | None, target: str, port: int, reply: str, family: int = 6) -> None:
    conn = host.connect(netns, target, port, family=family)
    assert conn.ok and conn.data == reply + "\n", f"{netns or 'host'} -> [{target}]:{port}: {conn}"


def blocked(host: Host, netns: str | None, target: str, port: int, family: int = 6) -> None:
    conn = host.connect(netns, target, port, timeout=BLOCKED_TIMEOUT, family=family)
    assert not conn.ok, f"{netns or 'host'} -> [{target}]:{port} should be blocked, got {conn}"


def addresses(host: Host, netns: str, family: int) -> list[str]:
    """Global addresses only: an IPv4-only interface has the kernel's IPv6 link-local one, as before."""
    out = host.run(
        ["ip", f"-{family}", "-o", "addr", "show", "dev", "eth0", "scope", "global"], netns=netns
    ).stdout
    return [line.split()[3] for line in out.splitlines()]


def record_of(host: Host) -> str:
    return host.run(f"cat {host.state_dir}/*.json").stdout


def outside6(host: Host) -> Outside:
    return host.add_outside(host_ip6=HOST6, ip6=OUTSIDE6)


def test_dual_stack_names_and_addresses(host: Host) -> None:
    spec = host.write_spec(SPEC)
    apply(host, spec)
    host.serve("web", 80, "web", dual=True)

    assert addresses(host, "web", 6) == ["fd00:28:1::10/64"]
    assert addresses(host, "web", 4) == ["172.28.1.10/24"]
    hosts = host.run(["getent", "ahosts", "www"], netns="client").stdout
    assert "fd00:28:1::10" in hosts and "172.28.1.10" in hosts, hosts
    reached(host, "client", "www", 80, "web", family=6)
    reached(host, "client", "web", 80, "web", family=4)
    # Usable at once: nothing tentative (the link-local address neither), no router advertisements taken.
    assert host.run(["ip", "-6", "addr", "show", "tentative"], netns="web").stdout == ""
    # Nor on the bridges (nr-*); their ports (nrv*) carry no address of ours and take their time.
    tentative = host.run(["ip", "-6", "-o", "addr", "show", "tentative"]).stdout.splitlines()
    assert [line for line in tentative if line.split()[1].startswith("nr-")] == [], tentative
    conf = "/proc/sys/net/ipv6/conf/eth0"
    quiet = host.run(["cat", f"{conf}/accept_ra", f"{conf}/autoconf"], netns="web").stdout
    assert quiet.split() == ["0", "0"]
    bind = "import socket; socket.create_server(('fd00:28:1::10', 81), family=socket.AF_INET6)"
    assert host.run(["python3", "-c", bind], netns="web").returncode == 0


def test_ipv6_only_container_has_no_ipv4(host: Host) -> None:
    spec = host.write_spec(SPEC)
    apply(host, spec)
    host.serve("v6a", 90, "v6a", dual=True)

    assert addresses(host, "v6a", 4) == []
    assert [a.split("/")[0] for a in addresses(host, "v6a", 6)] == ["fd00:28:9::2"]
    assert host.run(["ip", "-4", "route"], netns="v6a").stdout == ""
    assert "default via fd00:28:9::1" in host.run(["ip", "-6", "route"], netns="v6a").stdout
    hosts = host.run(["getent", "ahosts", "v6a"], netns="v6b").stdout
    assert hosts.split()[0] == "fd00:28:9::2" and "." not in hosts.split()[0], hosts
    reached(host, "v6b", "v6a", 90, "v6a")
    # `ipv6: true` with no subnet: both families, the IPv6 one a ULA /64 from the pool.
    six = addresses(host, "lone", 6)
    assert len(six) == 1 and six[0].startswith("fd") and six[0].endswith("/64"), six
    assert len(addresses(host, "lone", 4)) == 1


def test_published_ports_over_ipv6_from_outside(host: Host) -> None:
    outside = outside6(host)
    spec = host.write_spec(SPEC)
    apply(host, spec)
    host.serve("web", 80, "web 80", dual=True)
    host.serve("web", 443, "web 443", dual=True)
    host.serve("v6a", 90, "v6a", dual=True)

    # No host address: every address of both families.
    reached(host, outside.netns, HOST6, 8080, "web 80")
    reached(host, outside.netns, outside.host_ip, 8080, "web 80", family=4)
    # A bracketed IPv6 host address: that address only, and not on IPv4.
    reached(host, outside.netns, HOST6, 8443, "web 443")
    blocked(host, outside.netns, outside.host_ip, 8443, family=4)
    # An IPv6-only container is published on IPv6 alone.
    reached(host, outside.netns, HOST6, 9090, "v6a")
    blocked(host, outside.netns, outside.host_ip, 9090, family=4)


def test_outbound_nat66_seen_as_the_host_address(host: Host) -> None:
    outside = outside6(host)
    spec = host.write_spec(SPEC)
    apply(host, spec)
    host.serve(outside.netns, 7000, "peer {peer}", dual=True)

    assert host.run(["sysctl", "-n", "net.ipv6.conf.all.forwarding"]).stdout.strip() == "1"
    reached(host, "client", OUTSIDE6, 7000, f"peer {HOST6}")
    reached(host, "v6a", OUTSIDE6, 7000, f"peer {HOST6}")
    reached(host, "client", outside.ip, 7000, f"peer {outside.host_ip}", family=4)


def test_isolation_internal_and_icc_hold_for_ipv6(host: Host) -> None:
    outside = outside6(host)
    spec = host.write_spec(SPEC)
    apply(host, spec)
    host.serve(outside.netns, 7000, "outside", dual=True)
    for name in ("v6a", "sealed2", "quiet2"):
        host.serve(name, 7000, name, dual=True)

    # Networks are isolated from each other; a member of the same network gets through.
    blocked(host, "client", "fd00:28:9::2", 7000)
    reached(host, "v6b", "fd00:28:9::2", 7000, "v6a")
    # internal: no way out, no IPv6 default route, its members still reach each other.
    assert "default" not in host.run(["ip", "-6", "route"], netns="sealed1").stdout
    blocked(host, "sealed1", OUTSIDE6, 7000)
    reached(host, "sealed1", "sealed2", 7000, "sealed2")
    reached(host, "client", OUTSIDE6, 7000, "outside")
    # icc: false: neighbours are cut off, the host still reaches them (and neighbour discovery works).
    blocked(host, "quiet1", "quiet2", 7000)
    quiet2 = addresses(host, "quiet2", 6)[0].split("/")[0]
    reached(host, None, quiet2, 7000, "quiet2")


def test_second_apply_no_changes_and_destroy_leaves_nothing(host: Host) -> None:
    spec = host.write_spec(SPEC)
    apply(host, spec)
    record = record_of(host)
    ruleset = host.run("nft list ruleset").stdout

    second = apply(host, spec)
    assert "No changes" in second.stdout, second.stdout
    assert host.run("nft list ruleset").stdout == ruleset
    # The pool's ULA subnet is recorded and kept.
    assert record_of(host) == record
    assert '"subnet6"' in record
    assert host.reconciler("apply", str(spec), "--dry-run", "--exit-code").returncode == 0

    proc = host.reconciler("destroy", str(spec))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert host.netns_list() == []
    assert host.links() == {"lo": 1}
    assert host.nft_tables() == []


def test_router_advertised_default_route_is_never_broken_silently(host: Host) -> None:
    outside = outside6(host)
    dev = outside.host_ifname
    host.run(["sysctl", "-w", f"net.ipv6.conf.{dev}.accept_ra=1"])
    host.run(["ip", "-6", "route", "add", "default", "via", "fe80::1", "dev", dev, "proto", "ra"])
    spec = host.write_spec(SPEC)

    refused = host.reconciler("apply", str(spec))
    assert refused.returncode != 0
    assert f"interface {dev}" in refused.stderr and f"net.ipv6.conf.{dev}.accept_ra=2" in refused.stderr
    assert host.netns_list() == ["outside"] and host.nft_tables() == []
    assert host.run(["sysctl", "-n", "net.ipv6.conf.all.forwarding"]).stdout.strip() == "0"

    host.run(["sysctl", "-w", f"net.ipv6.conf.{dev}.accept_ra=2"])
    apply(host, spec)
    assert "default via fe80::1" in host.run(["ip", "-6", "route", "show", "default"]).stdout


def test_ipv6_added_to_a_running_ipv4_network_and_taken_away_again(host: Host) -> None:
    containers = {"a": {"networks": ["front"]}, "b": {"networks": ["front"]}}
    v4 = {"version": 1, "networks": {"front": {"subnet": "172.28.1.0/24"}}, "containers": containers}
    dual = {**v4, "networks": {"front": {"subnet": ["172.28.1.0/24", "fd00:28:1::/64"]}}}
    apply(host, host.write_spec(v4, "v4.yaml"))
    before = host.links("a")
    host.serve("b", 7000, "b", dual=True)

    spec = host.write_spec(dual, "dual.yaml")
    apply(host, spec)
    assert host.links("a") == before  # the interfaces stay; they gain addresses
    reached(host, "a", "b", 7000, "b", family=6)
    reached(host, "a", "b", 7000, "b", family=4)
    assert "No changes" in apply(host, spec).stdout

    apply(host, host.write_spec(v4, "v4.yaml"))
    assert addresses(host, "a", 6) == []
    assert "default" not in host.run(["ip", "-6", "route"], netns="a").stdout
    assert not any("ip6" in t for t in host.nft_tables()), host.nft_tables()
    reached(host, "a", "b", 7000, "b", family=4)


def test_the_daemon_repairs_ipv6_drift_from_events(host: Host) -> None:
    """A removed IPv6 address and IPv6 default route inside a container are repaired by the watch
    daemon from kernel events alone (its resync is an hour away)."""
    from test_watch import reconciles, start_watch, wait_for

    specs = host.workdir / "specs"
    specs.mkdir()
    front = {"front": SPEC["networks"]["front"]}
    pair = {"web": {"networks": SPEC["containers"]["web"]["networks"]}, "client": {"networks": ["front"]}}
    host.write_spec({"version": 1, "networks": front, "containers": pair}, "specs/all.yaml")
    daemon = start_watch(host, specs)
    wait_for("the first reconcile", lambda: bool(reconciles(daemon, "applied")), daemon)
    assert addresses(host, "web", 6) == ["fd00:28:1::10/64"]

    host.run(["ip", "-6", "addr", "del", "fd00:28:1::10/64", "dev", "eth0"], netns="web")
    wait_for("web's IPv6 address back", lambda: addresses(host, "web", 6) == ["fd00:28:1::10/64"], daemon)
    host.run(["ip", "-6", "route", "del", "default"], netns="client")
    routes = lambda: host.run(["ip", "-6", "route", "show", "default"], netns="client").stdout  # noqa: E731
    wait_for("client's IPv6 default route back", lambda: "via fd00:28:1::1" in routes(), daemon)
    assert all(r["trigger"] != "resync" for r in reconciles(daemon)[1:]), reconciles(daemon)
    host.serve("web", 7000, "web", dual=True)
    reached(host, "client", "web", 7000, "web", family=6)
