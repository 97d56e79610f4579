"""`reconciler graph`: a spec's topology as Mermaid (renders on GitHub) or Graphviz DOT.

Networks are hexagons, containers rounded boxes, and published ports arrows from the host. The
picture comes from the spec alone (no host needed): an auto-picked subnet shows as "auto".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .spec import Network, Spec

FORMATS = ("mermaid", "dot")


@dataclass(frozen=True)
class Node:
    id: str
    kind: str  # "network", "container" or "host"
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str
    directed: bool = False


@dataclass
class Topology:
    title: str
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)


def topology(spec: Spec) -> Topology:
    # Ids are positional: spec names may hold '.' and '-', which neither syntax takes in a bare id.
    top = Topology(spec.name or "default")
    net_ids = {name: f"n{i}" for i, name in enumerate(spec.networks)}
    for name, net in spec.networks.items():
        top.nodes.append(Node(net_ids[name], "network", (name, *_network_lines(net))))
    published: list[Edge] = []
    for i, (cname, ctr) in enumerate(spec.containers.items()):
        cid = f"c{i}"
        lines = (cname, f"netns {ctr.netns}") if ctr.netns else (cname,)
        top.nodes.append(Node(cid, "container", lines))
        for nname, att in ctr.attachments().items():
            label = ", ".join([*([str(att.ipv4_address)] if att.ipv4_address else []), *att.aliases])
            top.edges.append(Edge(cid, net_ids[nname], label))
        published.extend(Edge("host", cid, port, directed=True) for port in ctr.ports)
    if published:
        top.nodes.insert(0, Node("host", "host", ("host",)))
        top.edges.extend(published)
    return top


def _network_lines(net: Network) -> tuple[str, ...]:
    facts: list[str] = [net.driver]
    if net.driver == "macvlan":
        facts.append(f"parent {net.parent}, {net.mode} mode")
    facts.append("no IPAM" if net.ipam == "none" else f"subnet {net.subnet or 'auto'}")
    if net.host_access:
        facts.append("host access")
    if net.internal:
        facts.append("internal")
    if not net.icc:
        facts.append("icc off")
    if net.mtu is not None:
        facts.append(f"mtu {net.mtu}")
    return (", ".join(facts),)


_MERMAID_SHAPES = {"network": ('{{"', '"}}'), "container": ('("', '")'), "host": ('[/"', '"\\]')}


def mermaid(top: Topology) -> str:
    out = ["flowchart LR"]
    for node in top.nodes:
        left, right = _MERMAID_SHAPES[node.kind]
        out.append(f"  {node.id}{left}{'<br/>'.join(_mermaid_text(t) for t in node.lines)}{right}")
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
}


def dot(top: Topology) -> str:
    out = [
        f"graph {_dot_text(top.title)} {{",
        "  rankdir=LR;",
        '  node [fontname="sans-serif"];',
        '  edge [fontname="sans-serif"];',
    ]
    for node in top.nodes:
        label = "\\n".join(_dot_text(t)[1:-1] for t in node.lines)
        out.append(f'  {node.id} [label="{label}", {_DOT_SHAPES[node.kind]}];')
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
