"""`reconciler graph`: the topology drawn from a spec, in Mermaid and Graphviz DOT."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.drivers.overlay.clusterspec import vni_of
from reconciler.graph import dot, mermaid, render, topology
from reconciler.specload import load_spec, parse_spec_text

REPO = Path(__file__).resolve().parent.parent

SPEC = """\
version: 1
name: shop
networks:
  front: {subnet: 172.30.1.0/24}
  back: {internal: true, icc: false, mtu: 1400}
containers:
  web.1:
    networks:
      front: {ipv4_address: 172.30.1.10, aliases: [www]}
      back:
    ports: ["8000:5000", "127.0.0.1:9000-9001:9000-9001/udp"]
  db:
    networks: [back]
    netns: /proc/1234/ns/net
  lonely: {}
"""


def test_topology_has_every_network_container_attachment_and_port() -> None:
    top = topology(parse_spec_text(SPEC, "shop.yaml"))
    nodes = {n.id: (n.kind, n.lines) for n in top.nodes}
    assert nodes == {
        "host": ("host", ("host",)),
        "n0": ("network", ("front", "bridge, subnet 172.30.1.0/24")),
        "n1": ("network", ("back", "bridge, subnet auto, internal, icc off, mtu 1400")),
        "c0": ("container", ("web.1",)),
        "c1": ("container", ("db", "netns /proc/1234/ns/net")),
        "c2": ("container", ("lonely",)),
    }
    edges = [(e.source, e.target, e.label, e.directed) for e in top.edges]
    assert edges == [
        ("c0", "n0", "172.30.1.10, www", False),
        ("c0", "n1", "", False),
        ("c1", "n1", "", False),
        ("host", "c0", "8000:5000", True),
        ("host", "c0", "127.0.0.1:9000-9001:9000-9001/udp", True),
    ]


def test_macvlan_networks_show_parent_mode_and_ipam() -> None:
    spec = parse_spec_text(
        "version: 1\nnetworks:\n"
        "  lan: {driver: macvlan, parent: eth0, subnet: 192.0.2.0/24, host_access: true}\n"
        "  raw: {driver: macvlan, parent: eth1.10, mode: private, ipam: none}\n",
        "lan.yaml",
    )
    labels = [n.lines[1] for n in topology(spec).nodes]
    assert labels == [
        "macvlan, parent eth0, bridge mode, subnet 192.0.2.0/24, host access",
        "macvlan, parent eth1.10, private mode, no IPAM",
    ]


def test_mermaid_output() -> None:
    text = mermaid(topology(parse_spec_text(SPEC, "shop.yaml")))
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    assert '  n1{{"back<br/>bridge, subnet auto, internal, icc off, mtu 1400"}}' in lines
    assert '  c0("web.1")' in lines
    assert '  c0 ---|"172.30.1.10, www"| n0' in lines
    assert '  host -->|"8000:5000"| c0' in lines
    # Every node line declares an id once; every edge joins declared ids.
    declared = [m.group(1) for line in lines[1:] if (m := re.match(r"  (\w+)[\[({]", line))]
    assert len(declared) == len(set(declared)) == 6
    for line in lines[1:]:
        if m := re.match(r"  (\w+) (?:---|-->)(?:\|[^|]*\|)? (\w+)$", line):
            assert {m.group(1), m.group(2)} <= set(declared)


def test_dot_output() -> None:
    text = dot(topology(parse_spec_text(SPEC, "shop.yaml")))
    lines = text.splitlines()
    assert lines[0] == 'graph "shop" {'
    assert lines[-1] == "}"
    assert '  n0 [label="front\\nbridge, subnet 172.30.1.0/24", shape=hexagon];' in lines
    assert '  c1 [label="db\\nnetns /proc/1234/ns/net", shape=box, style="rounded"];' in lines
    assert '  host -- c0 [label="8000:5000", dir=forward];' in lines
    assert "  c2 -- " not in text


CLUSTER = """\
version: 1
hosts:
  host-a: {address: 192.0.2.11}
  host-b: {address: 192.0.2.12}
networks:
  pets: {driver: overlay, subnet: 10.200.0.0/24}
  back: {driver: overlay, subnet: 10.201.0.0/24, vni: 5000}
containers:
  web: {host: host-a, networks: [pets], ports: ["8080:80"]}
  api-1: {host: host-a, networks: [pets, back]}
  api-2: {host: host-b, networks: [pets]}
services:
  api:
    network: pets
    backends: [api-1, api-2]
    ports: ["8000:5000", "53/udp"]
"""


def test_cluster_hosts_hold_their_containers_and_services_reach_backends() -> None:
    spec = parse_spec_text(CLUSTER, "cluster.yaml")
    top = topology(spec)
    nodes = {n.id: (n.kind, n.lines) for n in top.nodes}
    assert nodes == {
        "n0": ("network", ("pets", f"overlay, subnet 10.200.0.0/24, vni {vni_of(spec, 'pets')}")),
        "n1": ("network", ("back", "overlay, subnet 10.201.0.0/24, vni 5000")),
        "h0": ("host", ("192.0.2.11",)),
        "h1": ("host", ("192.0.2.12",)),
        "c0": ("container", ("web",)),
        "c1": ("container", ("api-1",)),
        "c2": ("container", ("api-2",)),
        "s0": ("service", ("api", "VIP 5000, 53/udp")),
    }
    assert [(g.title, g.members) for g in top.groups] == [
        ("host-a", ("h0", "c0", "c1")),
        ("host-b", ("h1", "c2")),
    ]
    edges = [(e.source, e.target, e.label, e.directed) for e in top.edges]
    assert edges == [
        ("c0", "n0", "", False),
        ("c1", "n0", "", False),
        ("c1", "n1", "", False),
        ("c2", "n0", "", False),
        ("s0", "n0", "", False),
        ("s0", "c1", "", True),
        ("s0", "c2", "", True),
        ("h0", "c0", "8080:80", True),  # a container's port: its own host only
        ("h0", "s0", "8000:5000", True),  # a service's: every host (the routing mesh)
        ("h1", "s0", "8000:5000", True),
    ]


def test_cluster_boxes_in_mermaid_and_dot() -> None:
    top = topology(parse_spec_text(CLUSTER, "cluster.yaml"))
    lines = mermaid(top).splitlines()
    start = lines.index('  subgraph g1["host-b"]')
    assert lines[start : start + 4] == [
        '  subgraph g1["host-b"]',
        '    h1[/"192.0.2.12"\\]',
        '    c2("api-2")',
        "  end",
    ]
    assert '  s0(["api<br/>VIP 5000, 53/udp"])' in lines
    # Hosts' members are declared inside their box only; networks and services outside every box.
    declared = [m.group(1) for line in lines[1:] if (m := re.match(r" +(\w+)[\[({]", line))]
    assert sorted(declared) == sorted(n.id for n in top.nodes)
    text = dot(top)
    assert '  subgraph cluster_g0 {\n    label="host-a";\n    h0 [label="192.0.2.11", shape=house];' in text
    assert '  s0 [label="api\\nVIP 5000, 53/udp", shape=ellipse];' in text
    assert '  h1 -- s0 [label="8000:5000", dir=forward];' in text


def test_labels_are_escaped() -> None:
    spec = parse_spec_text('version: 1\ncontainers:\n  x: {netns: "/run/a\\"b<c>"}\n', "q.yaml")
    assert '("x<br/>netns /run/a#quot;b#lt;c#gt;")' in render(spec, "mermaid")
    assert 'label="x\\nnetns /run/a\\"b<c>"' in render(spec, "dot")


@pytest.mark.parametrize("name", ["pets-bridge", "isolated-networks", "pets-macvlan", "pets-overlay"])
def test_readme_pictures_match_the_seed_specs(name: str) -> None:
    """The README's Mermaid pictures are this command's output, kept in step with the specs."""
    readme = (REPO / "README.md").read_text()
    spec = load_spec(REPO / "specs" / f"{name}.yaml")
    assert f"```mermaid\n{render(spec, 'mermaid')}\n```" in readme


def test_cli_graph_formats() -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "reconciler", "graph", *args]
        return subprocess.run(argv, capture_output=True, text=True, cwd=REPO)

    spec = "specs/pets-bridge.yaml"
    assert run(spec).stdout == render(load_spec(REPO / spec), "mermaid") + "\n"
    assert run(spec, "--format", "dot").stdout.startswith('graph "pets" {')
    bad = run("tests/specs_invalid/unknown_top_level_key.yaml")
    assert bad.returncode == 1
    assert "unknown_top_level_key.yaml:" in bad.stderr and "Traceback" not in bad.stderr
