"""Network policy from the spec alone: union semantics, disjoint set elements, `explain`."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.cli import main
from reconciler.model import NftElement
from reconciler.policy.explain import explain
from reconciler.policy.intervals import disjoint, merge
from reconciler.policy.model import admits, rules
from reconciler.policy.nft import desired_policy
from reconciler.spec import Spec

BASE: dict[str, Any] = {
    "version": 1,
    "networks": {
        "net": {"subnet": "10.88.0.0/24"},
        "lan": {"subnet": "10.89.0.0/24", "icc": False},
        "priv": {"internal": True},
        "ov": {"driver": "overlay", "subnet": "10.90.0.0/24"},
    },
    "containers": {
        "db": {"networks": ["net"]},
        "web": {"networks": {"net": {"ipv4_address": "10.88.0.11"}}, "ports": ["8080:80"]},
        "other": {"networks": ["net", "lan"]},
        "lone": {"networks": ["lan"]},
        "hidden": {"networks": ["priv"]},
        "api1": {"networks": ["ov"]},
        "api2": {"networks": ["ov"]},
        "client": {"networks": ["ov"]},
    },
    "services": {"api": {"network": "ov", "backends": ["api1", "api2"], "ports": ["8080"]}},
}


def spec(policies: dict[str, Any]) -> Spec:
    return Spec.model_validate({**BASE, "policies": policies})


def test_union_of_every_policy_naming_a_container() -> None:
    s = spec(
        {
            "a": {"to": ["db"], "from": ["web"], "ports": ["6379/tcp"]},
            "b": {"to": ["db", "api"], "from": ["other", "10.0.0.0/8"]},
        }
    )
    selected = rules(s)
    assert sorted(selected) == ["api1", "api2", "db"]  # a service selects its backends
    assert [r.policy for r in selected["db"]] == ["a", "b"]
    assert admits(selected, "db", "tcp", 6379, src="web").policy == "a"
    assert not admits(selected, "db", "tcp", 6380, src="web").allowed  # a's ports only
    assert admits(selected, "db", "udp", 53, src="other").policy == "b"  # no ports: every port
    assert admits(selected, "db", "tcp", 1, src_address=ipaddress.ip_address("10.1.2.3")).policy == "b"
    assert not admits(selected, "db", "tcp", 1, src_address=ipaddress.ip_address("11.0.0.1")).allowed
    assert admits(selected, "web", "tcp", 1, src="lone").allowed  # unselected: unaffected


def test_empty_from_only_isolates() -> None:
    selected = rules(spec({"closed": {"to": ["db"], "from": []}}))
    assert not admits(selected, "db", "tcp", 1, src="web").allowed


def _area(rects: list[tuple[tuple[int, int], tuple[int, int]]]) -> set[tuple[int, int]]:
    return {(s, p) for (s0, s1), (p0, p1) in rects for s in range(s0, s1 + 1) for p in range(p0, p1 + 1)}


spans = st.tuples(st.integers(0, 20), st.integers(0, 8)).map(lambda t: (t[0], t[0] + t[1]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(spans, spans), max_size=6))
def test_disjoint_covers_the_same_area_without_overlaps(rects: list[Any]) -> None:
    out = disjoint(rects)
    assert _area(out) == _area(rects)
    assert sum(len(_area([r])) for r in out) == len(_area(out))  # no two pieces overlap


def test_merge_joins_touching_spans() -> None:
    assert merge([(4, 6), (1, 2), (3, 3), (9, 10)]) == [(1, 6), (9, 10)]


def _elements(s: Spec, addresses: dict[str, list[str]], nodes: tuple[str, ...] = ()) -> set[tuple[str, Any]]:
    parsed = {c: [ipaddress.ip_address(a) for a in its] for c, its in addresses.items()}
    out = desired_policy(s, "t", parsed, [ipaddress.ip_address(n) for n in nodes])
    return {(e.set, e.value_json) for e in out if isinstance(e, NftElement)}


ADDRS = {"db": ["10.88.0.10"], "web": ["10.88.0.11"], "other": ["10.88.0.12", "fd00::12"]}


def test_elements_are_disjoint_and_in_the_kernels_form() -> None:
    s = spec(
        {
            "a": {"to": ["db"], "from": ["web"], "ports": ["6379/tcp", "7000-7010/tcp"]},
            "b": {"to": ["db"], "from": ["10.88.0.0/24"], "ports": ["7005-7020/tcp"]},
        }
    )
    got = _elements(s, ADDRS)
    ports = sorted(v for name, v in got if name == "pol_ports")
    assert ("pol_sel", '"10.88.0.10"') in got
    # web (10.88.0.11) is inside b's /24: its pieces are cut so that nothing overlaps.
    assert ports == [
        '{"concat":["10.88.0.10","10.88.0.10","tcp",{"range":[7005,7020]}]}',
        '{"concat":["10.88.0.10","10.88.0.11","tcp",6379]}',
        '{"concat":["10.88.0.10","10.88.0.11","tcp",{"range":[7000,7020]}]}',
        '{"concat":["10.88.0.10",{"prefix":{"addr":"10.88.0.0","len":29}},"tcp",{"range":[7005,7020]}]}',
        '{"concat":["10.88.0.10",{"prefix":{"addr":"10.88.0.12","len":30}},"tcp",{"range":[7005,7020]}]}',
        '{"concat":["10.88.0.10",{"prefix":{"addr":"10.88.0.128","len":25}},"tcp",{"range":[7005,7020]}]}',
        '{"concat":["10.88.0.10",{"prefix":{"addr":"10.88.0.16","len":28}},"tcp",{"range":[7005,7020]}]}',
        '{"concat":["10.88.0.10",{"prefix":{"addr":"10.88.0.32","len":27}},"tcp",{"range":[7005,7020]}]}',
        '{"concat":["10.88.0.10",{"prefix":{"addr":"10.88.0.64","len":26}},"tcp",{"range":[7005,7020]}]}',
        '{"concat":["10.88.0.10",{"prefix":{"addr":"10.88.0.8","len":31}},"tcp",{"range":[7005,7020]}]}',
    ]


def test_ipv6_sources_and_nodes_go_to_their_family_sets() -> None:
    s = spec({"a": {"to": ["other"], "from": ["web", "fd00::/64"]}})
    got = _elements(s, ADDRS, nodes=("10.90.0.250",))
    assert ("pol_sel6", '"fd00::12"') in got
    assert ("pol_any6", '{"concat":["fd00::12",{"prefix":{"addr":"fd00::","len":64}}]}') in got
    assert ("pol_any", '{"concat":["10.88.0.12","10.88.0.11"]}') in got
    assert ("pol_nodes", '"10.90.0.250"') in got


def test_no_policies_no_elements() -> None:
    assert _elements(spec({}), ADDRS) == set()


@pytest.mark.parametrize(
    ("src", "dst", "port", "allowed", "denied_by", "policy"),
    [
        ("web", "db", "6379/tcp", True, None, "a"),
        ("other", "db", "6379/tcp", False, "policy", None),
        ("web", "db", "6380/tcp", False, "policy", None),
        ("db", "other", "1/udp", True, None, None),  # other is not selected
        ("db", "lone", "1/tcp", False, "networks", None),
        ("other", "lone", "1/tcp", False, "icc", None),
        ("1.2.3.4", "hidden", "1/tcp", False, "internal", None),
        ("198.51.100.7", "web", "80/tcp", True, None, "w"),
        ("203.0.113.1", "web", "80/tcp", False, "policy", None),
        ("198.51.100.7", "db", "6379/tcp", False, "outside", None),
        ("client", "api", "8080/tcp", True, None, "svc"),
        ("web", "api", "8080/tcp", False, "networks", None),
    ],
)
def test_explain(
    src: str, dst: str, port: str, allowed: bool, denied_by: str | None, policy: str | None
) -> None:
    s = spec(
        {
            "a": {"to": ["db"], "from": ["web"], "ports": ["6379/tcp"]},
            "w": {"to": ["web"], "from": ["198.51.100.0/24"], "ports": ["80/tcp"]},
            "svc": {"to": ["api"], "from": ["client"]},
        }
    )
    result = explain(s, src, dst, port)
    assert result.allowed is allowed
    assert {a.denied_by for a in result.answers} == {denied_by}
    assert {a.policy for a in result.answers} == {policy}


def test_explain_exit_codes_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**BASE, "policies": {"a": {"to": ["db"], "from": ["web"]}}}))
    assert main(["explain", str(path), "web", "db", "5432/tcp", "-o", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["allowed"] is True and shown["answers"][0]["policy"] == "a"
    assert main(["explain", str(path), "other", "db", "5432/tcp"]) == 1
    assert "denied" in capsys.readouterr().out
    assert main(["explain", str(path), "nobody", "db", "5432/tcp"]) == 2
    assert main(["explain", str(path), "web", "db", "5432/icmp"]) == 2
    (tmp_path / "bad.yaml").write_text("version: 1\npolicies:\n  p: {to: [x], from: []}\n")
    assert main(["explain", str(tmp_path / "bad.yaml"), "web", "db", "1/tcp"]) == 2
    assert "bad.yaml:3: policies.p.to.0: unknown container or service 'x'" in capsys.readouterr().err
