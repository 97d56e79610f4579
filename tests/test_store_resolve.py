"""The store's view -> the overlay's cluster spec and allocation (`reconciler/store/resolve.py`): pure,
so a view is written out by hand here (the same JSON the store holds)."""

from __future__ import annotations

import pytest

from reconciler.spec import Spec
from reconciler.store.client import Entry
from reconciler.store.model import Endpoint, HostRecord, Keys, View
from reconciler.store.resolve import StoreWaiting, resolve

KEYS = Keys.of("/netreconciler", "pets")


def local(**containers: object) -> Spec:
    return Spec.model_validate(
        {
            "version": 1,
            "name": "pets",
            "cluster": {"store": "etcd", "endpoints": ["http://192.0.2.2:2379"]},
            "networks": {"pets": {"driver": "overlay", "subnet": "10.200.0.0/24"}},
            "containers": containers or {"web": {"networks": ["pets"]}},
            "services": {"api": {"network": "pets", "backends": ["web", "db", "ghost"], "ports": ["80"]}},
        }
    )


def view(*endpoints: Endpoint, hosts: dict[str, str] | None = None) -> View:
    entries = {}
    for host, vtep in (hosts or {"host-a": "192.0.2.11", "host-b": "192.0.2.12"}).items():
        entries[KEYS.host(host)] = Entry(KEYS.host(host), HostRecord(vtep).to_json(), 1, 1, 1)
    for ep in endpoints:
        key = KEYS.address(ep.network, ep.address)
        entries[key] = Entry(key, ep.to_json(), 1, 1, 1)
    return View(KEYS, entries, 10)


NODES = (
    Endpoint.make("node", "host-a", "pets", "10.200.0.100", "host-a", "192.0.2.11"),
    Endpoint.make("node", "host-b", "pets", "10.200.0.101", "host-b", "192.0.2.12"),
)
WEB = Endpoint.make("container", "web", "pets", "10.200.0.10", "host-a", "192.0.2.11")
DB = Endpoint.make("container", "db", "pets", "10.200.0.11", "host-b", "192.0.2.12", ("primary",))
API = Endpoint.make("service", "api", "pets", "10.200.0.50")


def test_remote_containers_are_placed_on_their_hosts_with_the_stores_addresses() -> None:
    r = resolve(local(), view(*NODES, WEB, DB, API), "host-a")
    assert {h: str(c.address) for h, c in r.spec.hosts.items()} == {
        "host-a": "192.0.2.11",
        "host-b": "192.0.2.12",
    }
    assert r.spec.containers["db"].host == "host-b"
    assert r.spec.containers["db"].attachments()["pets"].aliases == ["primary"]
    assert r.spec.containers["web"].host == "host-a"
    alloc = r.allocation["pets"]
    assert alloc.containers == {"web": "10.200.0.10", "db": "10.200.0.11"}
    assert alloc.hosts == {"host-a": "10.200.0.100", "host-b": "10.200.0.101"}
    assert alloc.services == {"api": "10.200.0.50"}
    assert r.spec.services["api"].backends == ["web", "db"]
    assert r.missing == ["service api: backend ghost"]
    assert r.spec.cluster is None and r.waiting == []


def test_a_host_without_node_addresses_is_left_out_with_its_containers() -> None:
    r = resolve(local(), view(NODES[0], WEB, DB, API), "host-a")
    assert set(r.spec.hosts) == {"host-a"}
    assert "db" not in r.spec.containers
    assert r.spec.services["api"].backends == ["web"]


def test_a_local_container_without_an_address_waits() -> None:
    spec = local(web={"networks": ["pets"]}, queue={"networks": ["pets"]})
    r = resolve(spec, view(*NODES, WEB, API), "host-a")
    assert "queue" not in r.spec.containers
    assert r.waiting == ["container queue (on pets)"]


def test_nothing_to_build_on_before_this_host_has_a_node_address() -> None:
    with pytest.raises(StoreWaiting, match="host-a has no node address"):
        resolve(local(), view(NODES[1], DB), "host-a")


def test_a_hosts_registered_wireguard_key_becomes_its_public_key() -> None:
    key = "b" * 43 + "="
    entries = view(*NODES, WEB, DB, API).entries
    entries[KEYS.host("host-b")] = Entry(
        KEYS.host("host-b"), HostRecord("192.0.2.12", key).to_json(), 1, 1, 1
    )
    r = resolve(local(), View(KEYS, entries, 10), "host-a")
    assert r.spec.hosts["host-b"].public_key == key
    assert r.spec.hosts["host-a"].public_key is None
