"""The daemon's pure parts: which containers an edit touches, the partial-observe merge, the
post-apply memory, and how netlink messages become drift hints (fed hand-built messages)."""

from __future__ import annotations

from typing import Any

from reconciler import ipam
from reconciler.desired import desired_state
from reconciler.diff import plan
from reconciler.model import State, container_of
from reconciler.observe import Observed
from reconciler.spec import Spec
from reconciler.statedir import ScopeRecord
from reconciler.watch import cache

NETS = {"front": {"subnet": "10.1.0.0/24"}, "back": {"subnet": "10.2.0.0/24"}}


def spec(containers: dict[str, Any], networks: dict[str, Any] | None = None) -> Spec:
    return Spec.model_validate({"version": 1, "networks": networks or NETS, "containers": containers})


def desired(s: Spec) -> State:
    return desired_state(s, ipam.allocate(s, ScopeRecord(), []), "default")


def test_changed_containers_follow_containers_and_their_networks() -> None:
    old = spec({"a": {"networks": ["front"]}, "b": {"networks": ["back"]}, "c": {"networks": ["back"]}})
    added = spec({**old.model_dump()["containers"], "d": {"networks": ["front"]}})
    assert cache.changed_containers(old, added) == {"d"}
    moved = spec({"a": {"networks": ["front"]}, "b": {"networks": ["front"]}, "c": {"networks": ["back"]}})
    assert cache.changed_containers(old, moved) == {"b"}
    renet = spec(old.model_dump()["containers"], {**NETS, "back": {"subnet": "10.3.0.0/24"}})
    assert cache.changed_containers(old, renet) == {"b", "c"}
    assert cache.changed_containers(None, old) is None
    assert cache.changed_containers(old, old.model_copy(update={"name": "other"})) is None


def test_desired_changes_name_only_namespace_level_changes() -> None:
    old = spec({"a": {"networks": ["front"]}, "b": {"networks": ["front"]}})
    new = spec({"a": {"networks": ["front"]}, "b": {"networks": ["front"]}, "c": {"networks": ["front"]}})
    # Every hosts file of the network changes too, but files are always re-read: only c's namespace.
    assert cache.desired_changes(desired(old), desired(new)) == {"c"}


def test_merge_keeps_other_containers_and_takes_fresh_host_level() -> None:
    old = desired(spec({"a": {"networks": ["front"]}, "b": {"networks": ["front"]}}))
    remembered = Observed(state=old, foreign_netns={"/run/netns/b", "/run/netns/x"})
    fresh_state = State()
    for key, res in old.resources.items():
        if container_of(res) != "a" and key[0] not in cache.NAMESPACE_KINDS:
            fresh_state.add(res)
    merged = cache.merge(remembered, Observed(state=fresh_state, foreign_links={"eth0"}), {"b"}, {})
    assert ("netns", "a") in merged.state.resources and ("netns", "b") not in merged.state.resources
    assert ("iface", "b/front") not in merged.state.resources
    assert merged.foreign_netns == {"/run/netns/x"} and merged.foreign_links == {"eth0"}
    assert plan(old, merged.state)[0].resource.key == ("netns", "b")
