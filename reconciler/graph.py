"""`reconciler graph`: a spec's topology as Mermaid (renders on GitHub) or Graphviz DOT.

Networks are hexagons, containers rounded boxes, and published ports arrows from the host. The
picture comes from the spec alone (no host needed): an auto-picked subnet shows as "auto".
A cluster spec draws each host as a box (Mermaid subgraph, DOT cluster) holding its containers and
the host itself (its underlay address); overlay networks stay outside, linked to containers in every
host they span. A service is its VIP, linked to its network and its backends; a published service
port is an arrow from every host (the routing mesh).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .drivers.registry import driver_of
from .spec import Network, Spec

FORMATS = ("mermaid", "dot")


@dataclass(frozen=True)
class Node:
    id: str
    kind: str  # "network", "container", "host" or "service"
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str
    directed: bool = False


@dataclass(frozen=True)
class Group:
    """A cluster host: the nodes drawn inside its box."""

    id: str
    title: str
    members: tuple[str, ...]


@dataclass
class Topology:
    title: str
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)


def topology(spec: Spec) -> Topology:
    # Ids are positional: spec names may hold '.' and '-', which neither syntax takes in a bare id.
    top = Topology(spec.name or "default")
    net_ids = {name: f"n{i}" for i, name in enumerate(spec.networks)}
    for name, net in spec.networks.items():
        facts = _network_lines(spec, name, net)
        top.nodes.append(Node(net_ids[name], "network", (name, *facts)))
    host_ids = {name: f"h{i}" for i, name in enumerate(spec.hosts)}
    for name, host in spec.hosts.items():
        top.nodes.append(Node(host_ids[name], "host", (str(host.address),)))
    container_ids = {cname: f"c{i}" for i, cname in enumerate(spec.containers)}
    published: list[Edge] = []
    for cname, ctr in spec.containers.items():
        cid = container_ids[cname]
        lines = (cname, f"netns {ctr.netns}") if ctr.netns else (cname,)
        top.nodes.append(Node(cid, "container", lines))
        for nname, att in ctr.attachments().items():
            static = [str(a) for a in (att.ipv4_address, att.ipv6_address) if a is not None]
            label = ", ".join([*static, *att.aliases])
            top.edges.append(Edge(cid, net_ids[nname], label))
        source = host_ids.get(ctr.host or "", "host")
        published.extend(Edge(source, cid, port, directed=True) for port in ctr.ports)
    # A published service port answers on every host; without `hosts:` on the one implicit host.
    mesh = list(host_ids.values()) or ["host"]
    for i, (sname, svc) in enumerate(spec.services.items()):
        sid = f"s{i}"
        ports = list(zip(svc.ports, svc.service_ports(), strict=True))
        served = ", ".join(str(p.port) if p.protocol == "tcp" else f"{p.port}/{p.protocol}" for _, p in ports)
        top.nodes.append(Node(sid, "service", (sname, f"VIP {served}".rstrip())))
        top.edges.append(Edge(sid, net_ids[svc.network], ""))
        # In etcd mode a backend may run on another host: not in this spec, not drawn.
        top.edges.extend(
            Edge(sid, container_ids[b], "", directed=True) for b in svc.backends if b in container_ids
        )
        published.extend(
            Edge(h, sid, text, directed=True) for text, p in ports if p.published is not None for h in mesh
        )
    if any(e.source == "host" for e in published):
        top.nodes.insert(0, Node("host", "host", ("host",)))
    top.edges.extend(published)
    for name, hid in host_ids.items():
        members = [cid for cname, cid in container_ids.items() if spec.containers[cname].host == name]
        top.groups.append(Group(f"g{len(top.groups)}", name, (hid, *members)))
    return top


def _network_lines(spec: Spec, name: str, net: Network) -> tuple[str, ...]:
    facts: list[str] = []
    subnets = [str(s) for s in net.subnets] or ["auto"]
    if net.ipv6 and net.subnet6 is None:
        subnets.append("IPv6 auto")
    facts.append("no IPAM" if net.ipam == "none" else f"subnet {', '.join(subnets)}")
    if net.host_access:
        facts.append("host access")
    if net.internal:
        facts.append("internal")
    if not net.icc:
        facts.append("icc off")
    if net.mtu is not None:
        facts.append(f"mtu {net.mtu}")
    return (", ".join(driver_of(net).facts(spec, name, net, facts)),)


_MERMAID_SHAPES = {
    "network": ('{{"', '"}}'),
    "container": ('("', '")'),
    "host": ('[/"', '"\\]'),
    "service": ('(["', '"])'),
}


def _grouped(top: Topology) -> tuple[list[Node], list[tuple[Group, list[Node]]]]:
    """The nodes outside every host, and each host's nodes."""
    by_id = {n.id: n for n in top.nodes}
    inside = {m for g in top.groups for m in g.members}
    return [n for n in top.nodes if n.id not in inside], [
        (g, [by_id[m] for m in g.members]) for g in top.groups
    ]


def mermaid(top: Topology) -> str:
    out = ["flowchart LR"]

    def node_line(node: Node, indent: str) -> str:
        left, right = _MERMAID_SHAPES[node.kind]
        return f"{indent}{node.id}{left}{'<br/>'.join(_mermaid_text(t) for t in node.lines)}{right}"

    loose, groups = _grouped(top)
    out.extend(node_line(n, "  ") for n in loose)
    for group, nodes in groups:
        out.append(f'  subgraph {group.id}["{_mermaid_text(group.title)}"]')
        out.extend(node_line(n, "    ") for n in nodes)
        out.append("  end")
    for e in top.edges:
        arrow = "-->" if e.directed else "---"
        label = f'|"{_mermaid_text(e.label)}"|' if e.label else ""
        out.append(f"  {e.source} {arrow}{label} {e.target}")
    return "\n".join(out)


def _mermaid_text(text: str) -> str:
    # Mermaid's entity codes: a raw quote ends the label, and < > would be read as HTML.
    return text.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


_DOT_SHAPES = {
    "network": "shape=hexagon",
    "container": 'shape=box, style="rounded"',
    "host": "shape=house",
    "service": "shape=ellipse",
}


def dot(top: Topology) -> str:
    out = [
        f"graph {_dot_text(top.title)} {{",
        "  rankdir=LR;",
        '  node [fontname="sans-serif"];',
        '  edge [fontname="sans-serif"];',
    ]

    def node_line(node: Node, indent: str) -> str:
        label = "\\n".join(_dot_text(t)[1:-1] for t in node.lines)
        return f'{indent}{node.id} [label="{label}", {_DOT_SHAPES[node.kind]}];'

    loose, groups = _grouped(top)
    out.extend(node_line(n, "  ") for n in loose)
    for group, nodes in groups:
        # The "cluster" prefix is what makes Graphviz draw a subgraph as a box.
        out.append(f"  subgraph cluster_{group.id} {{")
        out.append(f"    label={_dot_text(group.title)};")
        out.extend(node_line(n, "    ") for n in nodes)
        out.append("  }")
    for e in top.edges:
        attrs = [f"label={_dot_text(e.label)}"] if e.label else []
        if e.directed:
            attrs.append("dir=forward")
        suffix = f" [{', '.join(attrs)}]" if attrs else ""
        out.append(f"  {e.source} -- {e.target}{suffix};")
    out.append("}")
    return "\n".join(out)


def _dot_text(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(spec: Spec, fmt: str) -> str:
    top = topology(spec)
    return mermaid(top) if fmt == "mermaid" else dot(top)
