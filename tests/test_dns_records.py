"""The resolver without the kernel: records from the desired state (who resolves what), the wire
format, and the answer path of the server, fuzzed with hypothesis."""

from __future__ import annotations

import contextlib
import json
import struct
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import ipam
from reconciler.desired import desired_state
from reconciler.dns import records, wire
from reconciler.dns.server import Resolver
from reconciler.spec import Spec
from reconciler.statedir import ScopeRecord


def compiled(networks: dict[str, Any], containers: dict[str, Any]) -> records.Compiled:
    spec = Spec.model_validate({"version": 1, "networks": networks, "containers": containers})
    record = ipam.allocate(spec, ScopeRecord(), [])
    desired = desired_state(spec, record, "default")
    return records.compile_all({"default": records.scope_records(spec, record, desired, {})})


def resolver(networks: dict[str, Any], containers: dict[str, Any]) -> Resolver:
    r = Resolver(Path("/nonexistent"), "/nonexistent/resolv.conf")
    r.compiled = compiled(networks, containers)
    return r


def ask(r: Resolver, container: str, name: str, qtype: int = wire.A) -> wire.Message | None:
    reply = r.answer(wire.query(name, qtype, ident=0x1234), r.compiled.views[f"/run/netns/{container}"])
    if not reply:
        return None  # forwarded
    msg = wire.parse(reply)
    assert msg.id == 0x1234 and msg.flags & wire.QR
    return msg


def addresses(msg: wire.Message | None) -> list[str]:
    assert msg is not None and msg.rcode == wire.NOERROR
    return [wire.address_of(a.data) for a in msg.answers]


NETS = {"n1": {"subnet": "10.1.0.0/24"}, "n2": {"subnet": "10.2.0.0/24"}, "n3": {"subnet": "10.3.0.0/24"}}
CONTAINERS = {
    "a": {"networks": ["n1"]},
    "b": {"networks": {"n1": None, "n2": {"aliases": ["bee"]}}},
    "c": {"networks": ["n2"]},
    "d": {"networks": ["n3"]},
}


def test_a_container_resolves_exactly_the_names_of_the_networks_it_shares() -> None:
    r = resolver(NETS, CONTAINERS)
    assert addresses(ask(r, "a", "b")) == ["10.1.0.3"]
    assert addresses(ask(r, "a", "A.")) == ["10.1.0.2"]  # names are case-insensitive
    assert addresses(ask(r, "c", "bee")) == ["10.2.0.2"]
    assert sorted(addresses(ask(r, "b", "b"))) == ["10.1.0.3", "10.2.0.2"]
    # An alias belongs to one network: not resolvable from n1.
    for asker, name in [("a", "bee"), ("a", "c"), ("d", "a"), ("c", "a")]:
        msg = ask(r, asker, name)
        assert msg is not None and msg.rcode == wire.NXDOMAIN and not msg.answers, (asker, name)
    # Not ours: forwarded (None), never answered from another network's names.
    assert ask(r, "a", "example.com") is None


def test_own_names_answer_other_types_without_data_and_ptr_for_our_addresses() -> None:
    r = resolver(NETS, CONTAINERS)
    msg = ask(r, "a", "b", wire.AAAA)
    assert msg is not None and msg.rcode == wire.NOERROR and msg.answers == []
    ptr = ask(r, "a", "3.0.1.10.in-addr.arpa", wire.PTR)
    assert ptr is not None and [wire.read_name(a.data, 0)[0] for a in ptr.answers] == ["b"]
    assert ask(r, "a", "2.0.2.10.in-addr.arpa", wire.PTR).rcode == wire.NXDOMAIN  # type: ignore[union-attr]
    assert all(a.ttl <= 5 for a in ptr.answers)


def test_a_shared_alias_answers_every_member_in_rotating_order() -> None:
    containers = {f"w{i}": {"networks": {"n1": {"aliases": ["web"]}}} for i in range(3)}
    r = resolver({"n1": {"subnet": "10.1.0.0/24"}}, {**containers, "client": {"networks": ["n1"]}})
    firsts = []
    for _ in range(3):
        got = addresses(ask(r, "client", "web"))
        assert sorted(got) == ["10.1.0.2", "10.1.0.3", "10.1.0.4"]
        firsts.append(got[0])
    assert len(set(firsts)) == 3


def test_a_query_asked_again_is_answered_from_memory_and_the_memory_is_bounded() -> None:
    from reconciler.dns import server

    r = resolver(NETS, CONTAINERS)
    view = r.compiled.views["/run/netns/a"]
    first, again = (r.answer(wire.query("b", wire.A, ident=i), view) for i in (1, 2))
    assert first and again and first[2:] == again[2:] and again[:2] == b"\x00\x02"
    assert len(view.hot) == 1
    for i in range(server.HOT_LIMIT + 1):  # distinct queries: the memory starts again
        r.answer(wire.query("b", wire.A, ident=1) + i.to_bytes(3, "big"), view)  # trailing junk
    assert r.hot_entries <= server.HOT_LIMIT and addresses(ask(r, "a", "b")) == ["10.1.0.3"]


def test_internal_only_containers_are_not_forwarded() -> None:
    nets = {"in": {"subnet": "10.1.0.0/24", "internal": True}, "out": {"subnet": "10.2.0.0/24"}}
    r = resolver(nets, {"x": {"networks": ["in"]}, "y": {"networks": ["in", "out"]}})
    msg = ask(r, "x", "example.com")
    assert msg is not None and msg.rcode == wire.REFUSED
    assert ask(r, "y", "example.com") is None
    assert addresses(ask(r, "x", "y")) == ["10.1.0.3"]


def test_a_big_answer_is_truncated_over_udp_only() -> None:
    from reconciler.dns.server import _truncated

    containers = {f"w{i}": {"networks": {"n1": {"aliases": ["web"]}}} for i in range(100)}
    r = resolver({"n1": {"subnet": "10.1.0.0/24"}}, containers)
    reply = r.answer(wire.query("web", wire.A), r.compiled.views["/run/netns/w0"])
    assert reply and len(wire.parse(reply).answers) == 100
    short = _truncated(reply)
    msg = wire.parse(short)
    assert len(short) <= wire.UDP_LIMIT and msg.flags & wire.TC and 0 < len(msg.answers) < 100


def test_compression_pointers_must_point_backwards() -> None:
    header = struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0)
    looping = header + b"\xc0\x0c" + b"\x00\x01\x00\x01"  # points at itself
    for data in (looping, header + b"\x01a\xc0\x0c\x00\x01\x00\x01"):
        try:
            wire.parse(data)
        except wire.Malformed:
            continue
        raise AssertionError(f"accepted {data!r}")
    assert wire.read_name(b"\x01a\x00" + b"\xc0\x00", 3) == ("a", 5)


GOOD = wire.query("b", wire.A, ident=7)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=600),
        st.builds(lambda cut, tail: GOOD[:cut] + tail, st.integers(0, 20), st.binary(max_size=40)),
    )
)
def test_no_packet_crashes_the_parser_or_the_answer_path(data: bytes) -> None:
    r = FUZZED
    view = r.compiled.views["/run/netns/a"]
    with contextlib.suppress(wire.Malformed):
        wire.parse(data)
    reply = r.answer(data, view)
    assert reply is None or isinstance(reply, bytes)
    if reply:
        assert reply[:2] == data[:2] and reply[2] & 0x80
    assert addresses(ask(r, "a", "b")) == ["10.1.0.3"]


FUZZED = resolver(NETS, CONTAINERS)


def _sorted(recs: records.Records) -> records.Records:
    """Records with each network's lines in one order (a part's come last)."""
    return {**recs, "networks": {n: sorted(lines) for n, lines in recs["networks"].items()}}


# Containers (a to e) -> their networks.
CHANGES = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d", "e"]),
    st.lists(st.sampled_from(["n1", "n2", "n3"]), min_size=1, max_size=2, unique=True),
    max_size=5,
)


@given(CHANGES, CHANGES)
@settings(max_examples=60, deadline=None)
def test_a_part_update_of_the_records_is_what_building_them_whole_gives(
    before: dict[str, list[str]], after: dict[str, list[str]]
) -> None:
    """`with_part`, from the records before a change of some containers, equals `scope_records` after it."""

    def built(containers: dict[str, list[str]], previous: ScopeRecord) -> tuple[Spec, ScopeRecord, Any]:
        spec = Spec.model_validate(
            {
                "version": 1,
                "networks": NETS,
                "containers": {c: {"networks": n} for c, n in containers.items()},
            }
        )
        record = ipam.allocate(spec, previous, [])
        return spec, record, desired_state(spec, record, "default")

    old_spec, old_record, old_desired = built(before, ScopeRecord())
    old = records.scope_records(old_spec, old_record, old_desired, {})
    spec, record, desired = built(after, old_record)
    part = {c for c in before.keys() | after.keys() if before.get(c) != after.get(c)}
    netns = {c: f"/run/netns/{c}" for c in after}
    updated = records.with_part(old, spec, part, record, netns)
    # Unchanged containers keep their recorded addresses: only the part's lines differ.
    assert _sorted(updated) == _sorted(records.scope_records(spec, record, desired, {}))


def _records(containers: dict[str, list[str]], previous: ScopeRecord) -> tuple[records.Records, ScopeRecord]:
    spec = Spec.model_validate(
        {"version": 1, "networks": NETS, "containers": {c: {"networks": n} for c, n in containers.items()}}
    )
    record = ipam.allocate(spec, previous, [])
    return records.scope_records(spec, record, desired_state(spec, record, "default"), {}), record


def _answers(r: Resolver, asker: str) -> dict[str, tuple[int, list[str]] | None]:
    """What `asker` is answered for every name the tests use (None: forwarded), addresses sorted."""
    out: dict[str, tuple[int, list[str]] | None] = {}
    for name in ("a", "b", "c", "d", "e", "example.com"):
        msg = ask(r, asker, name)
        out[name] = None if msg is None else (msg.rcode, sorted(wire.address_of(a.data) for a in msg.answers))
    return out


@given(CHANGES, CHANGES)
@settings(max_examples=60, deadline=None)
def test_a_compile_from_the_last_one_answers_as_a_compile_from_nothing(
    before: dict[str, list[str]], after: dict[str, list[str]]
) -> None:
    """The resolver's reload keeps the networks whose lines did not change and the views made of
    them only: every container is answered as a compile of the new records alone answers it."""
    old, old_record = _records(before, ScopeRecord())
    new, _ = _records(after, old_record)
    kept, fresh = Resolver(Path("/nonexistent"), "/nonexistent/resolv.conf"), resolver(NETS, {})
    kept.compiled = records.compile_all({"default": new}, records.compile_all({"default": old}))
    fresh.compiled = records.compile_all({"default": new})
    assert kept.compiled.views.keys() == fresh.compiled.views.keys()
    assert kept.compiled.ours == fresh.compiled.ours
    for c in after:
        assert _answers(kept, c) == _answers(fresh, c), c


def test_a_reload_after_one_networks_change_keeps_the_other_networks_views() -> None:
    """Adding a container to n1 rebuilds the views that resolve n1; n3's view is kept (its
    remembered replies dropped: another network's names are NXDOMAIN there, and may have changed)."""
    old, record = _records({"a": ["n1"], "d": ["n3"], "e": ["n3"]}, ScopeRecord())
    new, _ = _records({"a": ["n1"], "c": ["n1"], "d": ["n3"], "e": ["n3"]}, record)
    r = Resolver(Path("/nonexistent"), "/nonexistent/resolv.conf")
    r.compiled = first = records.compile_all({"default": old})
    assert ask(r, "d", "c") is None  # not ours yet: forwarded
    assert addresses(ask(r, "d", "e")) == ["10.3.0.3"] and first.views["/run/netns/d"].hot
    r.compiled = records.compile_all({"default": new}, first)
    assert r.compiled.views["/run/netns/d"] is first.views["/run/netns/d"]
    assert not r.compiled.views["/run/netns/d"].hot
    assert r.compiled.views["/run/netns/a"] is not first.views["/run/netns/a"]
    assert addresses(ask(r, "a", "c")) == ["10.1.0.3"] and addresses(ask(r, "a", "a")) == ["10.1.0.2"]
    assert addresses(ask(r, "d", "e")) == ["10.3.0.3"]
    msg = ask(r, "d", "c")
    assert msg is not None and msg.rcode == wire.NXDOMAIN  # ours now, on a network d is not on


@given(st.lists(CHANGES, min_size=1, max_size=4))
@settings(max_examples=40, deadline=None)
def test_records_encoded_by_piece_are_what_json_dumps_writes(steps: list[dict[str, list[str]]]) -> None:
    pieces, record = records.Pieces(), ScopeRecord()
    for containers in steps:
        built, record = _records(containers, record)
        assert records.encode(built, pieces) == json.dumps(built, separators=(",", ":"))
        assert json.loads(records.encode(built, pieces)) == built  # again, every piece reused


def test_a_scope_file_that_reads_as_before_is_not_parsed_again(tmp_path: Path) -> None:
    from reconciler.dns.server import load_scopes

    (tmp_path / "scopes").mkdir()
    path = tmp_path / "scopes" / "one.json"
    built, _ = _records({"a": ["n1"]}, ScopeRecord())
    path.write_text(json.dumps(built))
    last: dict[str, tuple[str, records.Records]] = {}
    first = load_scopes(tmp_path, last)["one"]
    assert load_scopes(tmp_path, last)["one"] is first
    changed, _ = _records({"a": ["n1"], "b": ["n2"]}, ScopeRecord())
    path.write_text(json.dumps(changed))
    assert load_scopes(tmp_path, last)["one"] == changed
    path.unlink()
    assert load_scopes(tmp_path, last) == {} and last == {}
