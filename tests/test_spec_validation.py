"""Spec loading: invalid specs fail with located, readable problems; valid specs load; hostile YAML is
refused quickly.

Each `specs_invalid/NAME.yaml` carries its expectations as `# expect: LINE: field.path: message`
comments (the comments count as lines); every one must appear in the error as `NAME.yaml:LINE: ...`,
and nothing else: each problem is reported once, and none that only follows from another.
"""

from __future__ import annotations

import ipaddress
import os
import time
from pathlib import Path

import pytest

from reconciler.errors import SpecError
from reconciler.spec import Attachment, Container, Network
from reconciler.specload import MAX_BYTES, load_spec, parse_spec_text

INVALID = Path(__file__).parent / "specs_invalid"
CASES = sorted(INVALID.glob("*.yaml"))
EXPECT = "# expect:"

EXAMPLE = """\
version: 1
networks:
  mybridge:
    driver: bridge
    subnet: 172.30.0.0/24
containers:
  db:
    networks: [mybridge]
  web:
    networks:
      mybridge: {ipv4_address: 172.30.0.10, aliases: [www]}
    ports: ["8000:5000"]
"""


def _expectations(path: Path) -> list[str]:
    lines = path.read_bytes().decode("utf-8", "replace").splitlines()
    return [line.removeprefix(EXPECT).strip() for line in lines if line.startswith(EXPECT)]


def _problems(text: str) -> SpecError:
    with pytest.raises(SpecError) as caught:
        parse_spec_text(text, "spec.yaml")
    return caught.value


def test_corpus_is_there() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_invalid_spec(path: Path) -> None:
    expected = _expectations(path)
    assert expected, f"{path.name} has no '{EXPECT}' line"
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    report = str(caught.value)
    for line in expected:
        assert f"{path.name}:{line}" in report
    assert len(caught.value.problems) == len(expected), report
    assert all(p.line is not None and p.file == str(path) for p in caught.value.problems), report


def test_example_loads() -> None:
    spec = parse_spec_text(EXAMPLE, "example.yaml")
    assert spec.networks["mybridge"].subnet == ipaddress.IPv4Network("172.30.0.0/24")
    web = spec.containers["web"].attachments()["mybridge"]
    assert web.ipv4_address == ipaddress.IPv4Address("172.30.0.10")
    assert web.aliases == ["www"]
    assert [str(pm) for pm in spec.containers["web"].port_mappings()] == ["8000:5000/tcp"]


def test_list_and_mapping_network_forms_agree() -> None:
    text = """\
version: 1
networks: {a: {}, b: {}}
containers:
  listed: {networks: [a, b]}
  mapped: {networks: {a: , b: {}}}
"""
    spec = parse_spec_text(text, "forms.yaml")
    assert spec.containers["listed"].attachments() == {"a": Attachment(), "b": Attachment()}
    assert spec.containers["mapped"].attachments() == spec.containers["listed"].attachments()


def test_defaults() -> None:
    spec = parse_spec_text("version: 1\nnetworks:\n  plain: {}\ncontainers:\n  idle: {}\n", "d.yaml")
    assert spec.networks["plain"] == Network(driver="bridge", internal=False, icc=True)
    assert spec.containers["idle"] == Container(networks=[], ports=[], netns=None)
    assert spec.name is None


def test_shipped_specs_load() -> None:
    shipped = sorted((Path(__file__).parent.parent / "specs").glob("*.yaml"))
    for path in shipped:
        load_spec(path)


def test_union_failure_is_reported_once() -> None:
    err = _problems("version: 1\ncontainers:\n  web:\n    networks: 42\n")
    assert [str(p) for p in err.problems] == [
        "spec.yaml:4: containers.web.networks: "
        "must be a list of network names or a mapping of network name to options"
    ]


def test_error_inside_one_union_branch_hides_the_other_branch() -> None:
    err = _problems("version: 1\ncontainers:\n  web:\n    networks:\n      a: {ipv4_address: nope}\n")
    assert [str(p) for p in err.problems] == [
        "spec.yaml:5: containers.web.networks.a.ipv4_address: Input is not a valid IPv4 address"
    ]


def test_tab_indentation_gets_a_hint() -> None:
    err = _problems("version: 1\nnetworks:\n\tmybridge: {}\n")
    assert err.problems[0].line == 3
    assert err.problems[0].message.endswith("; tabs cannot indent YAML, use spaces")


def test_problems_are_in_file_order() -> None:
    err = _problems("networks:\n  a: {mtu: 1}\nversion: 2\nextra: 1\n")
    assert [p.line for p in err.problems] == sorted(p.line or 0 for p in err.problems)


def test_flood_of_problems_is_capped() -> None:
    err = _problems("version: 1\n" + "".join(f"k{i}: 1\n" for i in range(500)))
    assert len(err.problems) == 21
    assert err.problems[-1].message == "... and 480 more problems"


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SpecError) as caught:
        load_spec(missing)
    assert str(caught.value) == f"{missing}: cannot read the spec: No such file or directory"
    assert caught.value.problems[0].path == ()


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read the spec: Is a directory"):
        load_spec(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("version: 1\n")
    spec.chmod(0)
    with pytest.raises(SpecError, match="cannot read the spec: Permission denied"):
        load_spec(spec)


def test_file_over_limit(tmp_path: Path) -> None:
    spec = tmp_path / "big.yaml"
    spec.write_text("version: 1\n" + "#" * MAX_BYTES + "\n")
    with pytest.raises(SpecError) as caught:
        load_spec(spec)
    assert str(caught.value) == f"{spec}: the spec is larger than 1024 KiB"


def test_text_over_limit_in_bytes() -> None:
    # Under the limit in characters, over it in UTF-8 bytes.
    err = _problems("version: 1\nname: " + "é" * (MAX_BYTES // 2))
    assert [str(p) for p in err.problems] == ["spec.yaml: the spec is larger than 1024 KiB"]


def test_lone_surrogate() -> None:
    err = _problems("version: 1\nname: \udcff\n")
    assert [str(p) for p in err.problems] == ["spec.yaml:2: invalid character '\\udcff' (a lone surrogate)"]


def _laughs(levels: int) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


HOSTILE = {
    "alias_bomb": _laughs(30),
    "recursive_alias": "version: 1\nnetworks: &n {a: *n}\n",
    "deep_flow_nesting": "version: 1\nname: " + "[" * 200_000,
    "deep_block_nesting": "".join(" " * i + "k:\n" for i in range(1200)),
    "huge_scalar": "version: 1\nname: " + "a" * (MAX_BYTES - 100) + "\n",
    "duplicate_keys": "version: 1\n" + "containers:\n" * 20_000,
    "oversized": "version: 1\n" + "x: 1\n" * 2 * MAX_BYTES,
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_input_is_refused_quickly(text: str) -> None:
    started = time.monotonic()
    with pytest.raises(SpecError):
        parse_spec_text(text, "hostile.yaml")
    assert time.monotonic() - started < 2


MACVLAN_VALID = """\
version: 1
networks:
  seg0: {driver: macvlan, parent: lan0, subnet: 192.168.30.0/24}
  seg1: {driver: macvlan, parent: lan1, subnet: 192.168.30.0/24}
  vlan10: {driver: macvlan, parent: lan0.10, subnet: 10.10.0.0/24, mode: vepa}
  vlan20: {driver: macvlan, parent: lan0.20, subnet: 10.20.0.0/24, mode: private}
  single: {driver: macvlan, parent: lan2, subnet: 203.0.113.7/32, gateway: 203.0.113.1}
  p2p: {driver: macvlan, parent: lan2, subnet: 198.51.100.0/31, gateway: 198.51.100.0}
  l2: {driver: macvlan, parent: lan2, ipam: none}
  shim: {driver: macvlan, parent: lan3, subnet: 192.0.2.0/24, host_access: true}
  front: {subnet: 172.30.0.0/24}
containers:
  a:
    networks:
      seg0: {ipv4_address: 192.168.30.5}
      front: {}
    ports: ["8080:80"]
  b:
    networks:
      seg1: {ipv4_address: 192.168.30.5}
      single: {ipv4_address: 203.0.113.7}
      p2p: {ipv4_address: 198.51.100.1}
      l2: {}
"""


def test_macvlan_edge_cases_docker_refuses_are_valid() -> None:
    spec = parse_spec_text(MACVLAN_VALID, "macvlan.yaml")
    assert spec.networks["vlan10"].vlan() == ("lan0", 10)
    assert spec.networks["seg0"].vlan() is None
    assert spec.networks["seg0"].mode == "bridge" and spec.networks["l2"].ipam == "none"


def test_overlay_needs_a_subnet_every_host_agrees_on() -> None:
    err = _problems("version: 1\nnetworks:\n  o: {driver: overlay}\n")
    assert [p.message for p in err.problems] == [
        "an overlay network needs a subnet: every host must agree on it"
    ]


def test_aliases_docker_allows_are_valid() -> None:
    """Several containers sharing an alias (round robin), a container's own name as its alias (compose
    adds it), and another container's name where no member of the network resolves that container."""
    text = """\
version: 1
networks: {front: {}, back: {}}
containers:
  web1: {networks: {front: {aliases: [web, web1]}}}
  web2: {networks: {front: {aliases: [web]}}}
  db: {networks: [back]}
  other: {networks: {back: {aliases: [web1]}}}
"""
    spec = parse_spec_text(text, "aliases.yaml")
    assert spec.containers["web2"].attachments()["front"].aliases == ["web"]


def test_alias_shadowing_is_refused_from_either_side() -> None:
    """The alias is refused whichever is written first, the alias or the container it would shadow."""
    for order in (("a", "b"), ("b", "a")):
        bodies = {"a": "{networks: {n: {aliases: [b]}}}", "b": "{networks: [n]}"}
        containers = "".join(f"  {c}: {bodies[c]}\n" for c in order)
        text = "version: 1\nnetworks: {n: {}}\ncontainers:\n" + containers
        err = _problems(text)
        assert [p.path for p in err.problems] == [("containers", "a", "networks", "n", "aliases", 0)]
