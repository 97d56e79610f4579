"""`reconciler show` on the real kernel: without a spec, every scope on the host; with one, its scope,
a macvlan network included (it has no host object of its own)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sandbox import Host
from test_macvlan import PETS, add_lan

pytestmark = pytest.mark.integration


def bridge_spec(name: str, subnet: str, containers: list[str]) -> dict[str, Any]:
    return {
        "version": 1,
        "name": name,
        "networks": {"net": {"subnet": subnet}},
        "containers": {c: {"networks": ["net"], "ports": []} for c in containers},
    }


def ok(host: Host, *args: str) -> str:
    proc = host.reconciler(*args)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_show_lists_every_scope_and_macvlan_networks(host: Host) -> None:
    add_lan(host, "lan0", "router", "192.168.10.1/24")
    second = host.write_spec(bridge_spec("second", "10.70.0.0/24", ["s1", "s2"]), "second.yaml")
    third = host.write_spec(bridge_spec("third", "10.71.0.0/24", ["t1"]), "third.yaml")
    for spec in (PETS, second, third):
        ok(host, "apply", str(spec))

    scopes = host.show_all()["scopes"]
    assert sorted(scopes) == ["default", "second", "third"]
    assert sorted(scopes["default"]["containers"]) == ["db", "web"]
    assert sorted(scopes["second"]["containers"]) == ["s1", "s2"]
    assert sorted(scopes["third"]["containers"]) == ["t1"]
    lan = scopes["default"]["networks"]["lan10"]
    assert (lan["driver"], lan["parent"], lan["mode"], lan["subnet"]) == (
        "macvlan",
        "lan0",
        "bridge",
        "192.168.10.0/24",
    )
    assert scopes["second"]["networks"]["net"]["subnet"] == "10.70.0.0/24"
    assert scopes["third"]["networks"]["net"]["gateway"] == "10.71.0.1"

    text = ok(host, "show")
    for line in (
        "scope default",
        "scope second",
        "scope third",
        "network lan10: macvlan bridge on lan0 192.168.10.0/24",
        "network net: bridge",
        "container s1: /run/netns/s1",
        "container t1: /run/netns/t1",
    ):
        assert line in text, text
    assert text.index("scope default") < text.index("scope second") < text.index("scope third")

    one = host.show(Path(PETS))
    assert one["scope"] == "default" and one["networks"]["lan10"]["driver"] == "macvlan"
    assert sorted(one["containers"]) == ["db", "web"]
    assert "scope default\nnetwork lan10: macvlan bridge on lan0" in ok(host, "show", str(PETS))
    assert host.show(second)["networks"] == scopes["second"]["networks"]

    # Five containers in three scopes: the resolver listens in each namespace.
    assert "dns resolver: running (pid " in text and "listening in 5 namespaces)" in text, text
    assert host.show_all()["resolver"]["namespaces"] == 5

    ok(host, "destroy", str(third))
    assert sorted(host.show_all()["scopes"]) == ["default", "second"]
    assert host.show_all()["resolver"]["namespaces"] == 4


def test_show_on_an_empty_host(host: Host) -> None:
    assert host.show_all() == {"scopes": {}, "resolver": None}
    assert ok(host, "show").strip() == "no managed state on this host\ndns resolver: not running"
