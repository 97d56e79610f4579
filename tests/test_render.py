"""Plan lines say what changes: entries added and removed, the field that forces a replacement, the
change elsewhere that forces a cascade; never `X -> X`; and the summary counts the lines shown."""

from __future__ import annotations

import re

import pytest
from test_diff import CASES, golden, state

from reconciler.diff import plan, summary
from reconciler.model import HostsFile, Iface, MacvlanShim, Route, Sysctl
from reconciler.render import json_plan, line, text_plan

HEADER = "# managed by netreconciler (scope default); edits are overwritten\n127.0.0.1\tlocalhost\n"


def hosts(container: str, *entries: str) -> HostsFile:
    return HostsFile(container, HEADER + "".join(f"{e}\n" for e in entries))


def iface(address: str) -> Iface:
    return Iface("c1", "front", "/run/netns/c1", "eth0", "nrv000000000001", "nr-front", address)


def test_hosts_line_names_the_entries_added_and_removed() -> None:
    # Same length before and after: cut to a prefix, both sides used to read the same.
    old = hosts("c1", "172.17.0.2\tc1", "172.17.0.4\tc8")
    new = hosts("c1", "172.17.0.2\tc1", "172.17.0.5\tc9")
    assert len(old.content) == len(new.content)
    [action] = plan(state(new), state(old))
    assert line(action) == "  ~ hosts c1: + 172.17.0.5 c9; - 172.17.0.4 c8"


def test_shim_routes_line_names_the_routes_added_and_removed() -> None:
    old = MacvlanShim("lan", "nrm1", "eth0", "10.0.0.4/32", routes="10.0.0.2/32,10.0.0.3/32")
    new = MacvlanShim("lan", "nrm1", "eth0", "10.0.0.4/32", routes="10.0.0.2/32,10.0.0.9/32")
    [action] = plan(state(new), state(old))
    assert line(action) == "  ~ shim lan: routes: + 10.0.0.9/32; - 10.0.0.3/32"


def test_replaced_route_shows_its_real_change_and_why_it_is_replaced() -> None:
    old_route = Route("c1", "/run/netns/c1", "172.17.0.1", "eth0")
    new_route = Route("c1", "/run/netns/c1", "172.18.0.1", "eth0")
    actions = plan(state(iface("172.18.0.2/16"), new_route), state(iface("172.17.0.2/16"), old_route))
    lines = [line(a) for a in actions]
    assert lines == [
        "  ~ iface c1/front: address: 172.17.0.2/16 -> 172.18.0.2/16",
        "-/+ route c1: gateway: 172.17.0.1 -> 172.18.0.1 (because iface c1/front changes address)",
    ]


def test_the_field_that_forces_a_replacement_is_marked() -> None:
    actions = plan(*golden("immutable_replace"))
    assert line(actions[0]) == (
        "-/+ iface web/front: host_ifname: veth-web -> nrve4646f0d1544 (forces replacement)"
    )
    assert line(actions[1]) == (
        "-/+ route web: default via 172.30.0.1 dev eth0 (because iface web/front is replaced)"
    )


def test_long_values_that_differ_late_are_cut_where_they_differ() -> None:
    old, new = Sysctl("net.x", "a" * 90 + "1"), Sysctl("net.x", "a" * 90 + "2")
    shown = line(plan(state(new), state(old))[0])
    found = re.fullmatch(r"  ~ sysctl net.x: value: (\S+) -> (\S+)", shown)
    assert found is not None, shown
    before, after = found.groups()
    assert before != after and before.endswith("1") and after.endswith("2") and len(before) < 90, shown


@pytest.mark.parametrize("case", CASES)
def test_no_line_shows_a_value_going_to_itself(case: str) -> None:
    for action in plan(*golden(case)):
        text = line(action)
        for before, after in re.findall(r": (\S+) -> (\S+?)(?:,|$| \()", text):
            assert before != after, text
        assert all(b != a for b, a in action.changes().values())
        if action.op in ("change", "replace"):
            assert action.changes() or action.cause, f"{text}: changes nothing and names no cause"


@pytest.mark.parametrize("case", CASES)
def test_summary_counts_the_lines_shown(case: str) -> None:
    actions = plan(*golden(case))
    if not actions:
        return
    *lines, _, total = text_plan(actions).split("\n")
    signs = [ln.split()[0] for ln in lines]
    s = summary(actions)
    assert s["add"] == signs.count("+") + signs.count("-/+")
    assert s["change"] == signs.count("~")
    assert s["destroy"] == signs.count("-") + signs.count("-/+")
    assert total.startswith(f"Plan: {s['add']} to add, {s['change']} to change, {s['destroy']} to destroy")
    replaced = signs.count("-/+")
    assert (f"({replaced} replacement" in total) == (replaced > 0), total


def test_json_carries_the_real_before_and_after_of_changed_fields() -> None:
    actions = plan(*golden("address_change"))
    by_key = {(a["kind"], a["id"]): a for a in json_plan(actions)["actions"]}
    route = by_key["route", "web"]
    assert route["fields"] == [] and route["changes"] == {}
    assert route["because"] == "iface web/front changes address"
    web = by_key["iface", "web/front"]
    assert web["fields"] == ["address", "mac"]
    assert web["changes"]["address"] == {"before": "172.30.0.3/24", "after": "172.30.0.10/24"}
    assert "because" not in web
    db_hosts = by_key["hosts", "db"]["changes"]["content"]
    assert "172.30.0.3\tweb" in db_hosts["before"] and "172.30.0.10\tweb" in db_hosts["after"]
