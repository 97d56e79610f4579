"""etcd mode on three sandboxed hosts cabled to a sandboxed switch, with a 3-member etcd cluster the
test starts on the switch's sandbox (its own addresses there): every host runs `reconciler watch
SPEC --host NAME --advertise ADDRESS` on its own spec (the shared overlay and its own containers).

Covered: traffic across hosts by name; a container added to host-b's spec reached from host-a (and
reaching it) with element updates only on host-a; a name or a network definition used differently on
two hosts refused, located; one member stopped changes nothing; every member stopped leaves traffic
flowing and the daemons degraded, and they catch up when the members return; a killed daemon's
endpoints vanish elsewhere after its TTL; a daemon that missed compacted history lists again. Every
wait polls with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from etcd_members import Members, start_members
from sandbox import UNDERLAY_PREFIX, Background, Cluster, Host, make_cluster
from test_watch import METRICS, NO_RESYNC, address_in, http_get, log_lines, reconciles, replace, wait_for

pytestmark = pytest.mark.integration

HOSTS = ("host-a", "host-b", "host-c")
SUBNET = "10.230.0"
MEMBERS = [f"{UNDERLAY_PREFIX}.{i}" for i in (2, 3, 4)]


@dataclass
class Fleet:
    cluster: Cluster
    etcd: Members
    workdir: Path
    daemons: dict[str, Background]

    def host(self, name: str) -> Host:
        return self.cluster.hosts[HOSTS.index(name)]

    def spec_path(self, name: str) -> Path:
        return self.workdir / name / "pets.yaml"

    def write(self, name: str, data: dict[str, Any]) -> None:
        replace(self.spec_path(name), yaml.safe_dump(data, sort_keys=False))

    def start(self, name: str) -> Background:
        host = self.host(name)
        address = self.cluster.addresses[HOSTS.index(name)]
        self.daemons[name] = host.reconciler_background(
            "watch",
            "--metrics-address",
            f"{METRICS[0]}:{METRICS[1]}",
            str(self.spec_path(name)),
            "--host",
            name,
            "--advertise",
            address,
            "--log-format",
            "json",
            "--resync-interval",
            NO_RESYNC,
            log=self.workdir / f"watch-{name}-{len(log_lines_all(self.workdir))}.log",
        )
        return self.daemons[name]


def log_lines_all(workdir: Path) -> list[Path]:
    return list(workdir.glob("watch-*.log"))


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with made_fleet(tmp_path) as made:
        yield made


@contextlib.contextmanager
def made_fleet(tmp_path: Path, private_dirs: tuple[str, ...] = ()) -> Iterator[Fleet]:
    """The hosts (each with `private_dirs` too, see make_cluster) and the etcd members on the switch."""
    with make_cluster(len(HOSTS), tmp_path, private_dirs=private_dirs) as cluster:
        for address in MEMBERS:
            cluster.underlay.run(f"ip addr add {address}/24 dev ul")
        etcd = start_members(cluster.underlay, MEMBERS, tmp_path)
        for name in HOSTS:
            (tmp_path / name).mkdir()
        yield Fleet(cluster, etcd, tmp_path, {})


def spec_data(containers: dict[str, Any], ttl: int = 10, **extra: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "name": "pets",
        "cluster": {"store": "etcd", "endpoints": [f"http://{a}:2379" for a in MEMBERS], "ttl": ttl},
        "networks": {"pets": {"driver": "overlay", "subnet": f"{SUBNET}.0/24"}},
        "containers": containers,
        **extra,
    }


def on_pets(*names: str) -> dict[str, Any]:
    return {n: {"networks": ["pets"]} for n in names}


def reaches(host: Host, src: str, dst: str, port: int, reply: str) -> bool:
    return host.connect(src, dst, port, timeout=2).data == f"{reply}\n"


def vxlan_device(host: Host) -> str:
    links = json.loads(host.run(["ip", "-j", "link", "show", "type", "vxlan"]).stdout)
    assert len(links) == 1, links
    name: str = links[0]["ifname"]
    return name


def neighbours(host: Host) -> set[str]:
    entries = json.loads(host.run(["ip", "-j", "-4", "neigh", "show", "dev", vxlan_device(host)]).stdout)
    return {e["dst"] for e in entries}


def changed_kinds(daemon: Background, after: int) -> set[str]:
    applied = reconciles(daemon, "applied")[after:]
    return {change.split()[1] for e in applied for change in e["changes"]}


def messages(daemon: Background) -> list[str]:
    return [str(e.get("message", "")) for e in log_lines(daemon)]


def said(daemon: Background, text: str) -> bool:
    return any(text in line for line in [*messages(daemon), *problems(daemon)])


def problems(daemon: Background) -> list[str]:
    return [p for e in log_lines(daemon) for p in e.get("problems", [])]


def start_fleet(fleet: Fleet, specs: dict[str, dict[str, Any]]) -> None:
    for name, data in specs.items():
        fleet.write(name, data)
        fleet.start(name)
    for name, daemon in fleet.daemons.items():
        wait_for(f"{name}'s first reconcile", lambda d=daemon: bool(reconciles(d, "applied")), daemon)


def test_cross_host_names_live_additions_and_conflicts(fleet: Fleet) -> None:
    specs: dict[str, dict[str, Any]] = {
        "host-a": spec_data(on_pets("web")),
        "host-b": spec_data(on_pets("db")),
        "host-c": spec_data(on_pets("worker")),
    }
    start_fleet(fleet, specs)
    a, b, c = (fleet.host(n) for n in HOSTS)
    da, db_, dc = (fleet.daemons[n] for n in HOSTS)
    b.serve("db", 6379, "db-on-b")
    a.serve("web", 8080, "web-on-a")
    wait_for(
        "web on host-a to reach db on host-b by name", lambda: reaches(a, "web", "db", 6379, "db-on-b"), da
    )
    wait_for(
        "worker on host-c to reach web by name", lambda: reaches(c, "worker", "web", 8080, "web-on-a"), dc
    )

    # A container added to host-b's spec: host-a programs it with element updates only.
    links_before, seen = a.links(), len(reconciles(da, "applied"))
    specs["host-b"]["containers"]["cache"] = {"networks": ["pets"]}
    fleet.write("host-b", specs["host-b"])
    wait_for("cache on host-b", lambda: "cache" in b.netns_list() and address_in(b, "cache") != [], db_)
    b.serve("cache", 11211, "cache-on-b")
    wait_for("web to reach cache by name", lambda: reaches(a, "web", "cache", 11211, "cache-on-b"), da)
    wait_for("cache to reach web by name", lambda: reaches(b, "cache", "web", 8080, "web-on-a"), db_)
    assert a.links() == links_before, "host-a's devices changed"
    assert changed_kinds(da, seen) <= {"fdb", "neigh", "hosts"}, da.output()
    assert {"fdb", "neigh"} <= changed_kinds(da, seen), da.output()

    # The same container name on host-c: refused there, naming host-b; db on host-b is untouched.
    specs["host-c"]["containers"]["db"] = {"networks": ["pets"]}
    fleet.write("host-c", specs["host-c"])
    wait_for("host-c's refusal", lambda: said(dc, "container db already runs on host host-b"), dc)
    refusal = next(p for p in problems(dc) if "already runs on host host-b" in p)
    assert refusal.startswith(f"{fleet.spec_path('host-c')}:") and ": containers.db: " in refusal, refusal
    assert "db" not in c.netns_list()
    assert reaches(a, "web", "db", 6379, "db-on-b")

    # The overlay defined differently on host-c: refused, naming the difference and the host.
    specs["host-c"]["containers"].pop("db")
    specs["host-c"]["networks"]["pets"]["mtu"] = 1300
    fleet.write("host-c", specs["host-c"])
    wait_for("host-c's definition refusal", lambda: said(dc, "is defined differently on host"), dc)
    refusal = next(p for p in problems(dc) if "defined differently" in p)
    assert ": networks.pets.mtu: " in refusal and "mtu None there, 1300 here" in refusal, refusal
    assert reaches(c, "worker", "web", 8080, "web-on-a"), "the refused edit changed host-c"


def test_store_outages_degrade_and_catch_up(fleet: Fleet) -> None:
    specs = {"host-a": spec_data(on_pets("web")), "host-b": spec_data(on_pets("db"))}
    start_fleet(fleet, specs)
    a, b = fleet.host("host-a"), fleet.host("host-b")
    da, db_ = fleet.daemons["host-a"], fleet.daemons["host-b"]
    b.serve("db", 6379, "db-on-b")
    wait_for("web to reach db", lambda: reaches(a, "web", "db", 6379, "db-on-b"), da)

    # One member stopped: the other two are a quorum, and a new container still gets across.
    fleet.etcd.stop(0)
    specs["host-b"]["containers"]["cache"] = {"networks": ["pets"]}
    fleet.write("host-b", specs["host-b"])
    wait_for("cache on host-b", lambda: address_in(b, "cache") != [], db_)
    b.serve("cache", 11211, "cache-on-b")
    wait_for("web to reach cache", lambda: reaches(a, "web", "cache", 11211, "cache-on-b"), da)

    # Every member stopped: traffic flows as programmed; the daemons say they are degraded.
    fleet.etcd.stop_all()
    wait_for("host-a to report the store down", lambda: store_down(a), da)
    assert said(da, "the data plane stays as last programmed")
    assert 'reconciler_store_up{scope="pets"} 0.0' in http_get(a, "/metrics")
    specs["host-b"]["containers"]["queue"] = {"networks": ["pets"]}
    specs["host-b"]["containers"]["db"]["networks"] = {"pets": {"aliases": ["primary"]}}
    fleet.write("host-b", specs["host-b"])
    wait_for("host-b to wait for queue's address", lambda: said(db_, "container queue"), db_)
    assert reaches(a, "web", "db", 6379, "db-on-b") and reaches(a, "web", "cache", 11211, "cache-on-b")
    assert "queue" not in b.netns_list()

    # Back: both catch up without a restart.
    fleet.etcd.start_all()
    fleet.etcd.wait_healthy()
    wait_for("queue on host-b", lambda: address_in(b, "queue") != [], db_)
    b.serve("queue", 5672, "queue-on-b")
    wait_for("web to reach queue", lambda: reaches(a, "web", "queue", 5672, "queue-on-b"), da)
    wait_for("web to reach db by its alias", lambda: reaches(a, "web", "primary", 6379, "db-on-b"), da)
    wait_for("host-a to report the store up", lambda: not store_down(a), da)
    assert 'reconciler_store_up{scope="pets"} 1.0' in http_get(a, "/metrics")
    assert fleet.daemons["host-a"].proc.poll() is None and db_.proc.poll() is None


def store_down(host: Host) -> bool:
    shown = host.reconciler("show", "-o", "json", check=True)
    store = json.loads(shown.stdout)["scopes"]["pets"].get("store", {})
    return store.get("up") is False


def test_a_dead_hosts_endpoints_expire(fleet: Fleet) -> None:
    ttl = 3
    specs: dict[str, dict[str, Any]] = {
        "host-a": spec_data(on_pets("web"), ttl),
        "host-b": spec_data(on_pets("db"), ttl),
    }
    start_fleet(fleet, specs)
    a, b = fleet.host("host-a"), fleet.host("host-b")
    b.serve("db", 6379, "db-on-b")
    wait_for("web to reach db", lambda: reaches(a, "web", "db", 6379, "db-on-b"), fleet.daemons["host-a"])
    db_address = address_in(b, "db")[0]
    assert db_address in neighbours(a)
    fleet.daemons["host-b"].signal(signal.SIGKILL)
    wait_for("db's entries to leave host-a", lambda: db_address not in neighbours(a), fleet.daemons["host-a"])
    wait_for("db's name to leave web's hosts file", lambda: "\tdb\n" not in hosts_file(a, "web"))

    # host-b's daemon again: db keeps its address (the state record's, claimed first) and is back.
    fleet.start("host-b")
    wait_for("db back on host-a", lambda: db_address in neighbours(a), fleet.daemons["host-b"])
    assert address_in(b, "db") == [db_address]
    wait_for(
        "web to reach db again", lambda: reaches(a, "web", "db", 6379, "db-on-b"), fleet.daemons["host-a"]
    )


def hosts_file(host: Host, container: str) -> str:
    return (Path("/proc") / str(host.pid) / f"root/etc/netns/{container}/hosts").read_text()


def test_apply_reconciles_once_and_says_its_endpoints_expire(fleet: Fleet) -> None:
    fleet.write("host-a", spec_data(on_pets("web")))
    a = fleet.host("host-a")
    done = a.reconciler(
        "apply", str(fleet.spec_path("host-a")), "--host", "host-a", "--advertise", fleet.cluster.addresses[0]
    )
    assert done.returncode == 0, done.stderr
    assert "expire 10 s after this apply" in done.stderr, done.stderr
    assert address_in(a, "web") != []
    keys = fleet.etcd.etcdctl("get", "--prefix", "--keys-only", "/netreconciler/pets/")
    assert "/netreconciler/pets/names/web" in keys.split(), keys
    # A dry run reads the store and claims nothing: in sync, and no warning about expiry.
    dry = a.reconciler(
        "apply", str(fleet.spec_path("host-a")), "--dry-run", "--exit-code", "--host", "host-a",
        "--advertise", fleet.cluster.addresses[0],
    )  # fmt: skip
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "expire" not in dry.stderr, dry.stderr


def test_a_daemon_that_missed_compacted_history_lists_again(fleet: Fleet) -> None:
    # host-a reaches the cluster through member 0 only, so stopping it cuts host-a off alone.
    only_first = spec_data(on_pets("web"))
    only_first["cluster"]["endpoints"] = [f"http://{MEMBERS[0]}:2379"]
    specs = {"host-a": only_first, "host-b": spec_data(on_pets("db"))}
    start_fleet(fleet, specs)
    a, b = fleet.host("host-a"), fleet.host("host-b")
    da = fleet.daemons["host-a"]
    wait_for(
        "db on host-a", lambda: address_in(b, "db") != [] and address_in(b, "db")[0] in neighbours(a), da
    )
    old_db = address_in(b, "db")[0]

    fleet.etcd.stop(0)
    wait_for("host-a to report the store down", lambda: store_down(a), da)
    specs["host-b"]["containers"] = on_pets("cache")
    fleet.write("host-b", specs["host-b"])
    wait_for("cache on host-b", lambda: address_in(b, "cache") != [], fleet.daemons["host-b"])
    listing = json.loads(fleet.etcd.etcdctl("get", "--prefix", "/", "--keys-only", "-w", "json"))
    fleet.etcd.etcdctl("compact", str(listing["header"]["revision"]))

    fleet.etcd.start(0)
    fleet.etcd.wait_healthy()
    cache = address_in(b, "cache")[0]
    wait_for("cache on host-a", lambda: cache in neighbours(a), da)
    wait_for("db gone from host-a", lambda: old_db not in neighbours(a), da)
    assert said(da, "history compacted past revision"), da.output()
