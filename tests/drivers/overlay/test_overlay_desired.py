"""One host's part of a cluster spec, without a kernel: the overlay objects, names and services."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from reconciler import ipam
from reconciler.desired import desired_state
from reconciler.diff import plan
from reconciler.dns.records import scope_records, service_vips
from reconciler.drivers.overlay import cluster as overlay
from reconciler.drivers.overlay import clusteripam, wgkeys
from reconciler.drivers.overlay.model import Fdb, Neigh, Vxlan
from reconciler.drivers.overlay.observe import OverlayObserved
from reconciler.drivers.overlay.services import SLOTS
from reconciler.drivers.overlay.wgmodel import WgPeer, Wireguard
from reconciler.drivers.overlay.wireguard import TUNNEL_VXLAN_PORT, tunnel_address
from reconciler.errors import HostConflict
from reconciler.model import Bridge, HostsFile, Iface, NftElement, NftTable, State
from reconciler.spec import Spec
from reconciler.statedir import ScopeRecord

A, B = "192.0.2.11", "192.0.2.12"


def cluster_spec(**extra: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "hosts": {"host-a": {"address": A}, "host-b": {"address": B}},
        "networks": {
            "pets": {"driver": "overlay", "subnet": "10.200.0.0/24", "vni": 4097},
            "local": {"driver": "bridge", "subnet": "172.30.0.0/24"},
        },
        "containers": {
            "web": {"host": "host-a", "networks": {"pets": {"aliases": ["www"]}, "local": None}},
            "db": {"host": "host-b", "networks": ["pets"]},
            "api-1": {"host": "host-a", "networks": ["pets"]},
            "api-2": {"host": "host-b", "networks": ["pets"]},
        },
        "services": {"api": {"network": "pets", "backends": ["api-1", "api-2"], "ports": ["8000:5000"]}},
        **extra,
    }


def build(
    data: dict[str, Any], host: str = "host-a", underlay_mtu: int = 1500, key_file: str = "/nonexistent"
) -> tuple[State, overlay.Cluster]:
    """`key_file`: this host's WireGuard key, read only when an overlay is encrypted."""
    state, cluster, _ = build_with_record(data, host, underlay_mtu, key_file)
    return state, cluster


def resolved(data: dict[str, Any], network: str) -> list[list[str]]:
    """What the embedded resolver answers on `network` for host-a's containers (hosts-like lines)."""
    state, cluster, record = build_with_record(data)
    return scope_records(cluster.spec, record, state, service_vips(cluster.spec, None))["networks"][network]


def build_with_record(
    data: dict[str, Any], host: str = "host-a", underlay_mtu: int = 1500, key_file: str = "/nonexistent"
) -> tuple[State, overlay.Cluster, ScopeRecord]:
    spec = Spec.model_validate(data)
    address = str(spec.hosts[host].address)
    observed = OverlayObserved(local_addresses={address: underlay_mtu})
    cluster = overlay.prepare(spec, "default", host, None, observed, key_file)
    local = overlay.local_spec(cluster)
    record = ipam.allocate(local, ScopeRecord(), [])
    overlay.merge_record(cluster, record)
    state = desired_state(local, record, "default")
    overlay.extend_desired(cluster, local, record, state)
    return state, cluster, record


def of(state: State, cls: type) -> list[Any]:
    return [r for r in state.resources.values() if isinstance(r, cls)]


def test_host_a_gets_its_containers_a_vxlan_and_entries_for_remote_endpoints() -> None:
    state, cluster = build(cluster_spec(), underlay_mtu=9000)
    alloc = cluster.alloc["pets"]
    assert {i.container for i in of(state, Iface)} == {"web", "api-1"}
    (vx,) = of(state, Vxlan)
    assert (vx.vni, vx.local, vx.port, vx.learning, vx.proxy, vx.mtu) == (4097, A, 4789, False, True, 8950)
    assert {i.mtu for i in of(state, Iface) if i.network == "pets"} == {8950}
    remote = {alloc.containers["db"], alloc.containers["api-2"], alloc.hosts["host-b"]}
    assert {n.ip for n in of(state, Neigh)} == remote
    assert {f.dst for f in of(state, Fdb)} == {B}
    assert {f.mac for f in of(state, Fdb)} == {n.mac for n in of(state, Neigh)}
    bridge = state.resources[("bridge", "pets")]
    assert isinstance(bridge, Bridge)
    assert bridge.address is not None and f"{alloc.hosts['host-a']}/32" in bridge.address.split(",")
    assert f"{alloc.services['api']}/32" in bridge.address.split(",")
    # The bridge network is local: only host-a's container uses it.
    assert ("bridge", "local") in state.resources
    state_b, _ = build(cluster_spec(), host="host-b")
    assert ("bridge", "local") not in state_b.resources
    # Only overlays on host-b: its VIPs and routing mesh still need forwarding.
    assert ("sysctl", "net.ipv4.ip_forward") in state_b.resources


def test_names_resolve_across_hosts_and_services_to_their_vip() -> None:
    state, cluster = build(cluster_spec())
    alloc = cluster.alloc["pets"]
    lines = resolved(cluster_spec(), "pets")
    assert [alloc.containers["db"], "db"] in lines
    assert [alloc.containers["web"], "web", "www"] in lines
    assert [alloc.services["api"], "api"] in lines
    hosts = state.resources[("hosts", "web")]
    assert isinstance(hosts, HostsFile) and "\tdb" not in hosts.content  # peers are the resolver's


def test_service_slots_alternate_backends_and_backend_changes_are_element_updates() -> None:
    state, cluster = build(cluster_spec())
    alloc = cluster.alloc["pets"]
    slots = sorted((e.set, e.value[1]) for e in of(state, NftElement) if e.set.removeprefix("vip_").isdigit())
    assert len(slots) == SLOTS
    counts = {b: sum(1 for _, v in slots if v == alloc.containers[b]) for b in ("api-1", "api-2")}
    assert counts == {"api-1": SLOTS // 2, "api-2": SLOTS // 2}
    moved = cluster_spec()
    moved["services"]["api"]["backends"] = ["api-1", "db"]
    moved["containers"]["db"]["networks"] = ["pets"]
    state2, _ = build(moved)
    actions = plan(state2, state)
    assert actions and all(a.resource.kind == "nft-element" for a in actions), actions
    assert "ip" in {t.family for t in of(state, NftTable)}


def test_a_container_added_elsewhere_only_adds_entries_here() -> None:
    before, _ = build(cluster_spec())
    grown = cluster_spec()
    grown["containers"]["cache"] = {"host": "host-b", "networks": ["pets"]}
    after, _ = build(grown)
    kinds = {(a.op, a.resource.kind) for a in plan(after, before)}
    assert kinds == {("create", "fdb"), ("create", "neigh")}  # names: the resolver's records


def test_a_replaced_vxlan_gets_its_entries_again() -> None:
    state, _ = build(cluster_spec())
    observed = State(dict(state.resources))
    (vx,) = of(state, Vxlan)
    observed.add(Vxlan(vx.network, vx.ifname, vx.vni + 1, vx.local, vx.port, vx.bridge, vx.mtu))
    actions = plan(state, observed)
    assert ("replace", "vxlan") in {(a.op, a.resource.kind) for a in actions}
    created = {a.resource.key for a in actions if a.op == "create"}
    assert {r.key for r in [*of(state, Fdb), *of(state, Neigh)]} <= created
    vxlan_at = next(i for i, a in enumerate(actions) if a.resource.kind == "vxlan")
    assert all(i > vxlan_at for i, a in enumerate(actions) if isinstance(a.resource, (Fdb, Neigh)))


def test_host_selection() -> None:
    spec = Spec.model_validate(cluster_spec())
    assert overlay.select_host(spec, None, {B: 1500, "127.0.0.1": 65536}) == ("host-b", B)
    assert overlay.select_host(spec, "host-a", {A: 1500}) == ("host-a", A)
    with pytest.raises(HostConflict, match="pass --host"):
        overlay.select_host(spec, None, {"127.0.0.1": 65536})
    with pytest.raises(HostConflict, match="pass --host"):
        overlay.select_host(spec, None, {A: 1500, B: 1500})
    with pytest.raises(HostConflict, match="not one of the spec's hosts"):
        overlay.select_host(spec, "host-z", {A: 1500})
    with pytest.raises(HostConflict, match="not configured on this machine"):
        overlay.select_host(spec, "host-b", {A: 1500})
    single = Spec.model_validate({"version": 1})
    assert overlay.select_host(single, None, {}) == ("local", "")
    with pytest.raises(HostConflict, match="declares no hosts"):
        overlay.select_host(single, "host-a", {})


def keyed_spec(tmp_path: Path) -> tuple[dict[str, Any], str]:
    """The cluster spec with pets encrypted and a plain overlay beside it; host-a's key file."""
    files = [str(tmp_path / f"{h}.key") for h in ("host-a", "host-b")]
    keys = [wgkeys.keygen(f)[0] for f in files]
    data = cluster_spec()
    for host, key in zip(data["hosts"].values(), keys, strict=True):
        host["public_key"] = key
    data["networks"]["pets"]["encrypted"] = True
    data["networks"]["plain"] = {"driver": "overlay", "subnet": "10.201.0.0/24", "vni": 4098}
    return data, files[0]


def test_an_encrypted_overlay_tunnels_vxlan_between_tunnel_addresses(tmp_path: Path) -> None:
    data, key_file = keyed_spec(tmp_path)
    state, _ = build(data, key_file=key_file)
    vx = {v.network: v for v in of(state, Vxlan)}
    assert (vx["pets"].local, vx["pets"].port, vx["pets"].mtu) == ("100.64.2.11", TUNNEL_VXLAN_PORT, 1390)
    assert (vx["plain"].local, vx["plain"].port, vx["plain"].mtu) == (A, 4789, 1450)
    assert {f.dst for f in of(state, Fdb) if f.network == "pets"} == {"100.64.2.12"}
    assert {f.dst for f in of(state, Fdb) if f.network == "plain"} == {B}
    (wg,) = of(state, Wireguard)
    host_b = data["hosts"]["host-b"]
    assert wg.public_key == data["hosts"]["host-a"]["public_key"]
    assert (wg.address, wg.port, wg.mtu) == ("100.64.2.11/10", 51820, 1440)
    assert wg.peers == (WgPeer(host_b["public_key"], f"{B}:51820", "100.64.2.12/32"),)
    guard = [e for e in of(state, NftElement) if e.set == "tunnel_vxlan"]
    assert [e.value for e in guard] == [TUNNEL_VXLAN_PORT]
    private = Path(key_file).read_text().strip()
    assert private not in json.dumps([r.describe() for r in state.resources.values()], default=str)


def test_a_rotated_peer_key_is_one_change_of_the_device(tmp_path: Path) -> None:
    data, key_file = keyed_spec(tmp_path)
    before, _ = build(data, key_file=key_file)
    data["hosts"]["host-b"]["public_key"] = wgkeys.keygen(str(tmp_path / "new-b.key"))[0]
    after, _ = build(data, key_file=key_file)
    actions = plan(after, before)
    assert [(a.op, a.resource.kind, a.fields) for a in actions] == [("change", "wireguard", ("peers",))]


def test_this_hosts_key_file_must_match_its_public_key(tmp_path: Path) -> None:
    data, _ = keyed_spec(tmp_path)
    with pytest.raises(HostConflict, match=r"hosts\.host-a\.public_key is"):
        build(data, key_file=str(tmp_path / "host-b.key"))
    with pytest.raises(wgkeys.KeyFileError, match="does not exist"):
        build(data, key_file=str(tmp_path / "none.key"))
    # Without encryption the key file is not read at all.
    build(cluster_spec(), key_file=str(tmp_path / "none.key"))


def test_keygen_makes_a_private_file_once(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "wireguard.key"
    public, created = wgkeys.keygen(str(path))
    assert created and wgkeys.valid_public_key(public)
    assert path.stat().st_mode & 0o777 == 0o600
    assert wgkeys.keygen(str(path)) == (public, False)
    assert wgkeys.public_key_of(str(path)) == public
    path.write_text("garbage\n")
    with pytest.raises(wgkeys.KeyFileError, match="holds no WireGuard private key"):
        wgkeys.public_key_of(str(path))


def test_tunnel_addresses_keep_the_low_bits_of_the_underlay() -> None:
    assert str(tunnel_address(ipaddress.IPv4Address("192.0.2.11"))) == "100.64.2.11"
    assert str(tunnel_address(ipaddress.IPv4Address("10.1.200.7"))) == "100.65.200.7"


def dual_stack(subnet: Any = ("10.200.0.0/24", "fd00:200::/64")) -> dict[str, Any]:
    data = cluster_spec()
    data["networks"]["pets"]["subnet"] = list(subnet)
    return data


def test_a_dual_stack_overlay_has_an_address_and_a_neighbour_entry_per_family() -> None:
    state, cluster = build(dual_stack())
    a = cluster.alloc["pets"]
    assert a.subnet6 == "fd00:200::/64" and set(a.containers6) == set(a.containers)
    web = next(i for i in of(state, Iface) if i.container == "web" and i.network == "pets")
    assert web.address == f"{a.containers['web']}/24,{a.containers6['web']}/64"
    bridge = state.resources[("bridge", "pets")]
    assert isinstance(bridge, Bridge) and bridge.address is not None
    cidrs = bridge.address.split(",")
    assert {"fd00:200::1/64", f"{a.hosts6['host-a']}/128", f"{a.services6['api']}/128"} <= set(cidrs)
    remote6 = {a.containers6["db"], a.containers6["api-2"], a.hosts6["host-b"]}
    assert {n.ip for n in of(state, Neigh) if ":" in n.ip} == remote6
    # One FDB entry per remote MAC; both of an endpoint's addresses lead to it.
    macs = {n.ip: n.mac for n in of(state, Neigh)}
    assert macs[a.containers["db"]] == macs[a.containers6["db"]]
    assert len(of(state, Fdb)) == 3
    lines = resolved(dual_stack(), "pets")
    assert [a.containers6["db"], "db"] in lines and [a.services6["api"], "api"] in lines


def test_ipv6_vips_join_the_ip6_table_with_node_address_snat() -> None:
    state, cluster = build(dual_stack())
    a = cluster.alloc["pets"]
    six = [
        e for e in of(state, NftElement) if e.family == "ip6" and e.set.startswith(("vip", "node", "mesh"))
    ]
    assert {e.set for e in six} >= {"vips", "vip_addrs", "node_addr", "mesh", "mesh_port", "vip_0"}
    assert NftElement("ip6", "netreconciler", "vip_addrs", f'"{a.services6["api"]}"') in six
    backends6 = {a.containers6["api-1"], a.containers6["api-2"]}
    assert {e.value[1] for e in six if e.set.startswith("vip_") and e.set != "vip_addrs"} == backends6
    assert sorted(t.family for t in of(state, NftTable)) == ["inet", "ip", "ip6"]


def test_an_ipv6_only_overlay_derives_macs_from_names_the_same_on_every_host() -> None:
    state_a, cluster = build(dual_stack(["fd00:200::/64"]))
    state_b, _ = build(dual_stack(["fd00:200::/64"]), host="host-b")
    a = cluster.alloc["pets"]
    assert a.subnet == "" and a.containers == {} and a.containers6
    db = next(i for i in of(state_b, Iface) if i.container == "db")
    assert db.address == f"{a.containers6['db']}/64"
    # Host a's entry for db names the MAC host b gives db's interface.
    assert {n.mac for n in of(state_a, Neigh) if n.ip == a.containers6["db"]} == {db.mac}
    bridge_b = state_b.resources[("bridge", "pets")]
    assert isinstance(bridge_b, Bridge)
    assert {n.mac for n in of(state_a, Neigh) if n.ip == a.hosts6["host-b"]} == {bridge_b.mac}
    assert not [e for e in of(state_a, NftElement) if e.family == "ip" and e.set.startswith("vip")]


def test_lock_file_carries_ipv6_addresses_and_reads_back(tmp_path: Path) -> None:
    spec = Spec.model_validate(dual_stack())
    alloc = clusteripam.allocate(spec, None)
    text = clusteripam.to_json(alloc)
    assert '"subnet6": "fd00:200::/64"' in text and '"containers6"' in text
    lock = tmp_path / "spec.yaml.lock"
    lock.write_text(text)
    assert clusteripam.read_lock(lock) == alloc
    assert clusteripam.staleness(spec, alloc) == []
    # A new IPv6 subnet voids the family's locked addresses, and the lock says so.
    moved = Spec.model_validate(dual_stack(("10.200.0.0/24", "fd00:201::/64")))
    assert "network pets: subnet6 fd00:201::/64 is locked as fd00:200::/64" in clusteripam.staleness(
        moved, alloc
    )
    # An IPv4-only network's lock reads as it did before IPv6.
    ipv4_only = clusteripam.to_json(clusteripam.allocate(Spec.model_validate(cluster_spec()), None))
    assert '6"' not in ipv4_only


def test_an_underlay_mtu_that_leaves_ipv6_too_little_is_refused() -> None:
    with pytest.raises(HostConflict, match=r"network pets: .* leaves 1250 .* below 1280"):
        build(dual_stack(), underlay_mtu=1300)
    state, _ = build(dual_stack(), underlay_mtu=1330)  # 1280 left: enough
    assert {i.mtu for i in of(state, Iface) if i.network == "pets"} == {1280}
    # IPv4 alone gets by with less, as before.
    build(cluster_spec(), underlay_mtu=1300)
