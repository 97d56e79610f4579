"""The embedded resolver against the real kernel: real queries at 127.0.0.11:53 inside container
namespaces (glibc's getent through /etc/netns/NAME/resolv.conf, and Python sockets made inside the
namespaces, over UDP and TCP), the upstream a fake server in the sandbox named by a private
/etc/resolv.conf (never this machine's nameserver), and the resolver's life across applies,
kills, the daemon and the last scope's end."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from dnsclient import UPSTREAM, addresses, ask, ask_raw, netns_path, socket_in
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sandbox import REPO, Background, Host
from test_macvlan import add_lan

from reconciler.dns import wire

pytestmark = pytest.mark.integration

ANSWER = "192.0.2.53"  # what the fake upstream answers for every name
SILENT, LIVE, NOBODY = "127.0.0.54", "127.0.0.53", "127.0.0.55"
SPEC: dict[str, Any] = {
    "version": 1,
    "networks": {
        "front": {"subnet": "10.41.0.0/24"},
        "back": {"subnet": "10.42.0.0/24"},
        "vault": {"subnet": "10.43.0.0/24", "internal": True},
    },
    "containers": {
        "web": {"networks": {"front": None, "back": {"aliases": ["api"]}}},
        "db": {"networks": ["back", "vault"]},
        "cache": {"networks": ["front"]},
        "ext": {"networks": ["front"], "netns": "/run/netns/extns"},  # adopted
        "secret": {"networks": ["vault"]},
    },
}


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def apply(host: Host, spec: dict[str, Any] | Path, *args: str) -> None:
    path = spec if isinstance(spec, Path) else host.write_spec(spec)
    proc = host.reconciler("apply", str(path), *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def shown_address(host: Host, container: str, network: str, spec: Path | None = None) -> str:
    for iface in host.show(spec)["containers"][container]["interfaces"]:
        if iface["network"] == network:
            return str(iface["address"].split("/")[0])
    raise AssertionError(f"{container} has no interface on {network}")


@contextlib.contextmanager
def upstreams(host: Host, *servers: str) -> Iterator[dict[str, Background]]:
    """The fake upstreams (LIVE answers, SILENT never does) and a private /etc/resolv.conf naming
    `servers`, bind-mounted over the sandbox's own."""
    conf = host.workdir / "resolv.conf"
    set_upstreams(host, *servers)
    host.run(["mount", "--bind", str(conf), "/etc/resolv.conf"])
    started = {}
    for address, mode in ((LIVE, ANSWER), (SILENT, "silent")):
        log = host.workdir / f"upstream-{address}.log"
        started[address] = host.background(["python3", "-c", UPSTREAM, address, mode], log=log)
        wait_for(f"upstream {address}", lambda log=log: "listening" in log.read_text())  # type: ignore[misc]
    yield started


def set_upstreams(host: Host, *servers: str) -> None:
    # Written in place: the bind mount keeps the inode; the resolver sees the new mtime.
    (host.workdir / "resolv.conf").write_text("".join(f"nameserver {s}\n" for s in servers))


def asked(server: Background) -> list[str]:
    return server.output().splitlines()[1:]


def resolves(host: Host, container: str, name: str) -> list[str] | None:
    """The addresses `name` resolves to from `container`; None while nothing answers there."""
    try:
        return addresses(ask(host, container, name, timeout=1.0))
    except OSError:
        return None


def resolver_pid(host: Host) -> int | None:
    status = host.show_all()["resolver"]
    return None if status is None else int(status["pid"])


def gone(host: Host, pid: int) -> bool:
    """Exited: no such process, or a zombie (the sandbox's init does not reap)."""
    proc = host.run(["cat", f"/proc/{pid}/stat"], check=False)
    return proc.returncode != 0 or proc.stdout.split(") ")[1].startswith("Z")


def bound(host: Host, container: str) -> list[str]:
    """Sockets listening (TCP) or bound (UDP) at 127.0.0.11:53 in the container's namespace."""
    out = host.run(["ss", "-Hlnut", "src", "127.0.0.11"], netns=container).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


@pytest.fixture
def cluster_of_three(host: Host) -> Iterator[dict[str, Background]]:
    host.run(["ip", "netns", "add", "extns"])
    host.run(["ip", "link", "set", "lo", "up"], netns="extns")  # as a runtime's namespace has it
    with upstreams(host, LIVE) as started:
        apply(host, SPEC)
        yield started


def test_every_container_resolves_its_networks_names_and_nothing_else(
    host: Host, cluster_of_three: dict[str, Background]
) -> None:
    web_front, web_back = shown_address(host, "web", "front"), shown_address(host, "web", "back")
    db_back = shown_address(host, "db", "back")
    # glibc through the namespace's resolv.conf, which `ip netns exec` mounts.
    assert host.run(["cat", "/etc/netns/web/resolv.conf"]).stdout.splitlines()[1] == "nameserver 127.0.0.11"
    assert host.run(["getent", "hosts", "db"], netns="web").stdout.split() == [db_back, "db"]
    assert host.run(["getent", "hosts", "api"], netns="db").stdout.split() == [web_back, "api"]
    not_shared = host.run(["getent", "hosts", "db"], netns="cache", check=False)
    assert not_shared.returncode == 2 and not not_shared.stdout  # 2: not found (NXDOMAIN), not a failure
    # The hosts file lists the container's own names only.
    own = host.run(["cat", "/etc/netns/web/hosts"]).stdout.splitlines()[3:]
    assert own == [f"{web_front}\tweb", f"{web_back}\tweb\tapi"]
    for tcp in (False, True):
        assert addresses(ask(host, "extns", "web", tcp=tcp)) == [web_front]  # ext, adopted
        assert sorted(addresses(ask(host, "web", "WEB.", tcp=tcp))) == sorted([web_front, web_back])
        assert addresses(ask(host, "db", "api", tcp=tcp)) == [web_back]
        assert ask(host, "cache", "api", tcp=tcp).rcode == wire.NXDOMAIN  # api is back's alias only
        assert ask(host, "cache", "secret", tcp=tcp).rcode == wire.NXDOMAIN
        assert ask(host, "web", "db", wire.AAAA, tcp=tcp).answers == []  # a name of ours: no AAAA
        ptr = ask(host, "cache", wire.reverse_name(web_front), wire.PTR, tcp=tcp)
        assert [wire.read_name(a.data, 0)[0] for a in ptr.answers] == ["web"]
        assert all(0 < a.ttl <= 5 for a in ptr.answers)
    # The resolver listens only in container namespaces: nothing at 127.0.0.11 on the host.
    assert not host.run(["ss", "-Hlnut", "src", "127.0.0.11"]).stdout.strip()


def test_forwarding_fails_over_follows_resolv_conf_and_never_leaves_internal_networks(
    host: Host, cluster_of_three: dict[str, Background]
) -> None:
    live, silent = cluster_of_three[LIVE], cluster_of_three[SILENT]
    set_upstreams(host, SILENT, LIVE)
    start = time.monotonic()
    assert addresses(ask(host, "web", "first.example")) == [ANSWER]
    assert time.monotonic() - start < 2.0
    assert asked(silent) == ["first.example"] and asked(live) == ["first.example"]
    # The dead server is skipped from now on (moby #20335), over TCP too.
    assert addresses(ask(host, "cache", "second.example", tcp=True)) == [ANSWER]
    assert "second.example" not in asked(silent) and "second.example" in asked(live)
    # Containers on internal networks only get no forwarding (CVE-2024-29018); db is on one too.
    assert ask(host, "secret", "leak.example").rcode == wire.REFUSED
    assert addresses(ask(host, "secret", "db")) == [shown_address(host, "db", "vault")]
    assert addresses(ask(host, "db", "fine.example")) == [ANSWER]
    assert "leak.example" not in asked(live) + asked(silent)
    # No upstream answers: SERVFAIL within 2 s, whether it is silent or refuses.
    for i, servers in enumerate(((SILENT,), (NOBODY,), ())):
        set_upstreams(host, *servers)
        start = time.monotonic()
        assert ask(host, "web", f"gone{i}.example").rcode == wire.SERVFAIL
        assert time.monotonic() - start < 2.0, servers
    set_upstreams(host, LIVE)
    assert addresses(ask(host, "web", "back.example")) == [ANSWER]


def test_a_shared_alias_answers_every_member_in_turn(host: Host) -> None:
    spec = {
        "version": 1,
        "networks": {"net": {"subnet": "10.44.0.0/24"}},
        "containers": {
            **{f"w{i}": {"networks": {"net": {"aliases": ["pool"]}}} for i in range(3)},
            "client": {"networks": ["net"]},
        },
    }
    with upstreams(host, LIVE):
        apply(host, spec)
        members = sorted(shown_address(host, f"w{i}", "net") for i in range(3))
        firsts = set()
        for _ in range(3):
            got = addresses(ask(host, "client", "pool"))
            assert sorted(got) == members
            firsts.add(got[0])
        assert len(firsts) == 3


def test_macvlan_containers_resolve_each_other(host: Host) -> None:
    add_lan(host, "lan0", "router", "192.168.10.1/24")
    spec = {
        "version": 1,
        "networks": {"lan": {"driver": "macvlan", "parent": "lan0", "subnet": "192.168.10.0/24"}},
        "containers": {"db": {"networks": ["lan"]}, "web": {"networks": {"lan": {"aliases": ["www"]}}}},
    }
    with upstreams(host, LIVE):
        apply(host, spec)
        web = shown_address(host, "web", "lan")
        assert host.run(["getent", "hosts", "www"], netns="db").stdout.split() == [web, "www"]
        assert addresses(ask(host, "db", "web", tcp=True)) == [web]


def test_a_container_added_resolves_when_apply_returns_and_no_query_is_lost(host: Host) -> None:
    spec: dict[str, Any] = {
        "version": 1,
        "networks": {"net": {"subnet": "10.45.0.0/24"}},
        "containers": {"a": {"networks": ["net"]}, "b": {"networks": ["net"]}},
    }
    with upstreams(host, LIVE):
        apply(host, spec)
        b = shown_address(host, "b", "net")
        failures: list[str] = []
        answered = [0]
        stop = threading.Event()
        path = netns_path(host, "a")

        def keep_asking() -> None:  # all through the update: every query answered, and right
            while not stop.is_set():
                try:
                    got = addresses(
                        ask_raw(path, wire.query("b", wire.A, ident=answered[0] & 0xFFFF), timeout=1.0)
                    )
                    if got != [b]:
                        failures.append(f"b answered {got}")
                    answered[0] += 1
                except (OSError, AssertionError) as e:
                    failures.append(repr(e))

        asker = threading.Thread(target=keep_asking)
        asker.start()
        try:
            wait_for("the first answers", lambda: answered[0] > 10)
            spec["containers"]["c"] = {"networks": ["net"]}
            apply(host, spec)
            got = ask(host, "a", "c", timeout=0.1)  # at once: the apply waited for the resolver
            c = shown_address(host, "c", "net")
            assert addresses(got) == [c]
            assert addresses(ask(host, "c", "b")) == [b]
            del spec["containers"]["c"]
            apply(host, spec)
            assert addresses(ask(host, "a", "c", timeout=0.1)) == [ANSWER]  # no longer ours: forwarded
        finally:
            stop.set()
            asker.join()
        assert not failures, failures[:5]
        assert answered[0] > 20


# Runs inside the sandbox: one session applies the specs in a row (each after the first a part:
# session.reach), so the resolver's reloads after them change one network's lines only.
SESSION_DRIVER = """
import sys
from reconciler.engine import state_dir_from
from reconciler.session import Session
from reconciler.specload import load_spec
session = Session(state_dir_from(None))
for path in sys.argv[1:]:
    session.apply(load_spec(path))
"""


def test_after_a_part_the_changed_network_resolves_anew_and_the_others_as_before(host: Host) -> None:
    """The resolver recompiles only the changed network's views: the new name answers there at
    once, the unchanged network's members still resolve each other and call the new name ours
    (NXDOMAIN, not forwarded); a removal makes it forwarded again everywhere."""
    base: dict[str, Any] = {
        "version": 1,
        "networks": {"front": {"subnet": "10.46.0.0/24"}, "back": {"subnet": "10.47.0.0/24"}},
        "containers": {c: {"networks": [net]} for c, net in (("a", "front"), ("d", "back"), ("e", "back"))},
    }
    plus = {**base, "containers": {**base["containers"], "c": {"networks": ["front"]}}}
    base_path, plus_path = host.write_spec(base, "base.yaml"), host.write_spec(plus, "plus.yaml")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with upstreams(host, LIVE):
        host.run([sys.executable, "-c", SESSION_DRIVER, str(base_path), str(plus_path)], env=env)
        c = shown_address(host, "c", "front", plus_path)
        assert addresses(ask(host, "a", "c", timeout=0.5)) == [c]
        assert addresses(ask(host, "c", "a")) == [shown_address(host, "a", "front", plus_path)]
        e = shown_address(host, "e", "back", plus_path)
        assert addresses(ask(host, "d", "e")) == [e]
        assert ask(host, "d", "c").rcode == wire.NXDOMAIN
        host.run([sys.executable, "-c", SESSION_DRIVER, str(plus_path), str(base_path)], env=env)
        assert addresses(ask(host, "a", "c", timeout=0.5)) == [ANSWER]  # no longer ours: forwarded
        assert addresses(ask(host, "d", "c")) == [ANSWER]
        assert addresses(ask(host, "d", "e")) == [e]


def test_the_resolver_lives_while_needed_and_a_killed_one_leaves_nothing_bound(host: Host) -> None:
    one = {
        "version": 1,
        "name": "one",
        "networks": {"net": {"subnet": "10.46.0.0/24"}},
        "containers": {"a": {"networks": ["net"]}, "b": {"networks": ["net"]}},
    }
    two = {
        "version": 1,
        "name": "two",
        "networks": {"net": {"subnet": "10.47.0.0/24"}},
        "containers": {"x": {"networks": ["net"]}},
    }
    first, second = host.write_spec(one, "one.yaml"), host.write_spec(two, "two.yaml")
    with upstreams(host, LIVE):
        apply(host, first)
        apply(host, second)
        pid = resolver_pid(host)
        assert pid is not None and sorted(bound(host, "a")) == ["tcp", "udp"]
        host.run(["kill", "-9", str(pid)])
        wait_for("the killed resolver to go", lambda: gone(host, pid))
        assert bound(host, "a") == [] and bound(host, "x") == []  # the kernel closed every socket
        with pytest.raises(ConnectionRefusedError):
            ask(host, "a", "b", timeout=1.0)
        apply(host, first)  # in sync, yet it starts the resolver again, serving both scopes
        assert resolver_pid(host) not in (None, pid)
        assert addresses(ask(host, "x", "x")) == [shown_address(host, "x", "net", second)]
        assert addresses(ask(host, "a", "b")) == [shown_address(host, "b", "net", first)]
        pid = resolver_pid(host)
        assert pid is not None
        status = host.reconciler("status", check=True).stdout
        assert f"dns resolver: running (pid {pid}, listening in 3 namespaces)" in status, status
        assert host.reconciler("destroy", str(second)).returncode == 0
        assert resolver_pid(host) == pid and addresses(ask(host, "a", "b"))
        assert host.reconciler("destroy", str(first)).returncode == 0
        assert gone(host, pid) and resolver_pid(host) is None
        assert host.run(["ls", "-A", host.state_dir]).stdout.split() == ["lock"]
        assert "dns resolver: not running" in host.reconciler("show", check=True).stdout
        assert "dns resolver: not running" in host.reconciler("status", check=True).stdout


def test_the_daemon_restarts_a_killed_resolver(host: Host) -> None:
    specs = host.workdir / "specs"
    specs.mkdir()
    (specs / "net.yaml").write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "networks": {"net": {"subnet": "10.48.0.0/24"}},
                "containers": {"a": {"networks": ["net"]}, "b": {"networks": ["net"]}},
            }
        )
    )
    with upstreams(host, LIVE):
        daemon = host.reconciler_background(
            "watch", str(specs), "--log-format", "json", log=host.workdir / "watch.log"
        )
        wait_for("the daemon's first apply", lambda: resolver_pid(host) is not None, timeout=60)
        pid = resolver_pid(host)
        assert pid is not None
        b = shown_address(host, "b", "net")
        for _ in range(2):
            host.run(["kill", "-9", str(pid)])
            old = pid
            wait_for("a new resolver", lambda old=old: resolver_pid(host) not in (None, old))  # type: ignore[misc]
            wait_for("b to resolve again", lambda: resolves(host, "a", "b") == [b])
            pid = resolver_pid(host)
        assert "the DNS resolver is not running: starting it" in daemon.output()
        # A resolv.conf removed or edited by hand is drift: inotify reports it, the daemon writes it again.
        resolv = "/etc/netns/a/resolv.conf"
        ours = host.run(["cat", resolv]).stdout
        for damage in (f"rm {resolv}", f"echo 'nameserver 192.0.2.1' >> {resolv}"):
            host.run(damage)
            wait_for(
                f"the daemon to repair {damage!r}",
                lambda: host.run(["cat", resolv], check=False).stdout == ours,
            )


def test_a_resolv_conf_gone_is_written_again_and_a_foreign_one_is_left_alone(host: Host) -> None:
    spec = {
        "version": 1,
        "networks": {"net": {"subnet": "10.50.0.0/24"}},
        "containers": {"a": {"networks": ["net"]}, "b": {"networks": ["net"]}},
    }
    with upstreams(host, LIVE):
        apply(host, spec)
        ours = host.run(["cat", "/etc/netns/a/resolv.conf"]).stdout
        host.run("rm /etc/netns/a/resolv.conf && echo 'nameserver 192.0.2.1' > /etc/netns/b/resolv.conf")
        plan = host.reconciler("apply", str(host.write_spec(spec)), "--dry-run", "--exit-code")
        assert plan.returncode == 2 and "hosts a" in plan.stdout and "hosts b" not in plan.stdout, plan.stdout
        apply(host, spec)
        assert host.run(["cat", "/etc/netns/a/resolv.conf"]).stdout == ours
        assert host.run(["cat", "/etc/netns/b/resolv.conf"]).stdout == "nameserver 192.0.2.1\n"
        again = host.reconciler("apply", str(host.write_spec(spec)), "--dry-run", "--exit-code")
        assert again.returncode == 0, again.stdout


def test_malformed_packets_and_floods_never_stop_the_answers(host: Host) -> None:
    spec = {
        "version": 1,
        "networks": {"net": {"subnet": "10.49.0.0/24"}},
        "containers": {"a": {"networks": ["net"]}, "b": {"networks": ["net"]}},
    }
    with upstreams(host, LIVE):
        apply(host, spec)
        b = shown_address(host, "b", "net")
        path = netns_path(host, "a")
        good = wire.query("b", wire.A, ident=99)
        sender = socket_in(path, socket.SOCK_DGRAM)
        sender.connect(("127.0.0.11", 53))

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(
            st.one_of(
                st.binary(max_size=700),
                st.builds(
                    lambda cut, tail: good[:cut] + tail, st.integers(0, len(good)), st.binary(max_size=300)
                ),
                st.just(good[:12] + b"\xc0\x0c" * 200),  # a compression loop
                st.just(good[:12] + (b"\x3f" + b"a" * 63) * 8 + b"\0\0\1\0\1"),  # a name over 255 bytes
            ),
            st.booleans(),
        )
        def junk(data: bytes, tcp: bool) -> None:
            if tcp:
                with socket_in(path, socket.SOCK_STREAM) as conn:
                    conn.settimeout(2)
                    conn.connect(("127.0.0.11", 53))
                    conn.sendall(struct.pack("!H", min(len(data), 65535)) + data)
            else:
                sender.send(data)
            assert addresses(ask_raw(path, good, tcp=not tcp)) == [b]

        junk()
        # A flood from one namespace: another's answers keep coming.
        for _ in range(5000):
            with contextlib.suppress(BlockingIOError):
                sender.send(good[:20])
        assert addresses(ask(host, "b", "a", timeout=2.0)) == [shown_address(host, "a", "net")]
        sender.close()
        assert resolver_pid(host) is not None
