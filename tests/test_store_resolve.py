"""The store's view -> the overlay's cluster spec and allocation (`reconciler/store/resolve.py`): pure,
so a view is written out by hand here (the same JSON the store holds)."""

from __future__ import annotations

import re

import pytest

from reconciler.errors import HostConflict
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


def keyed_view(keys: dict[str, str], *endpoints: Endpoint) -> View:
    """host -> public key, registered in this order (host-a first)."""
    vteps = {"host-a": "192.0.2.11", "host-b": "192.0.2.12", "host-c": "192.0.2.13"}
    entries = {}
    for revision, (host, key) in enumerate(keys.items(), start=2):
        record = HostRecord(vteps[host], key).to_json()
        entries[KEYS.host(host)] = Entry(KEYS.host(host), record, 1, revision, revision)
    for ep in endpoints:
        entries[KEYS.address(ep.network, ep.address)] = Entry(
            KEYS.address(ep.network, ep.address), ep.to_json(), 1, 1, 1
        )
    return View(KEYS, entries, 10)


KEY_A, KEY_C = "A" * 43 + "=", "C" * 43 + "="
NODE_C = Endpoint.make("node", "host-c", "pets", "10.200.0.102", "host-c", "192.0.2.13")
WORKER = Endpoint.make("container", "worker", "pets", "10.200.0.12", "host-c", "192.0.2.13")


def test_registered_public_keys_become_the_hosts_keys() -> None:
    r = resolve(
        local(), keyed_view({"host-a": KEY_A, "host-c": KEY_C}, NODES[0], NODE_C, WEB, WORKER), "host-a"
    )
    assert {h: c.public_key for h, c in r.spec.hosts.items()} == {"host-a": KEY_A, "host-c": KEY_C}


def test_a_key_registered_twice_stays_with_its_first_host() -> None:
    # host-b registered host-a's key after it (a copied key file): refused on host-b, and left out
    # of host-a's and host-c's cluster with its containers.
    keys = {"host-a": KEY_A, "host-b": KEY_A, "host-c": KEY_C}
    v = keyed_view(keys, *NODES, NODE_C, WEB, DB, WORKER)
    for me in ("host-a", "host-c"):
        r = resolve(local(), v, me)
        assert set(r.spec.hosts) == {"host-a", "host-c"} and "db" not in r.spec.containers, me
    with pytest.raises(
        HostConflict,
        match=re.escape(f"host host-b's WireGuard public key {KEY_A} is registered by host host-a too"),
    ):
        resolve(local(db={"networks": ["pets"]}), v, "host-b")
