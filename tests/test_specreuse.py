"""A spec parsed again after an edit (specreuse.py, the daemon's handed-over applies) is exactly what a
fresh parse makes of the same text: an equal Spec, or the same problems at the same FILE:LINE. The
reference is always `specload.parse_spec_text`, on the shipped specs, the invalid corpus, edits that
break one container, and random line edits of a spec (quotes, brackets, block scalars, tabs, ...)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.errors import SpecError
from reconciler.session import reach
from reconciler.spec import Spec
from reconciler.specload import parse_spec_text
from reconciler.specreuse import Reparser
from reconciler.watch.handoff import Request, Specs
from reconciler.watch.sources import Parses, load_specs

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted((REPO / "specs").glob("*.yaml"))
INVALID = sorted((REPO / "tests" / "specs_invalid").glob("*.yaml"))
FILE = "/srv/spec.yaml"

BASE = """\
# a spec as people write it: comments, flow lists, quoted ports, blank lines
version: 1
name: shop

networks:
  front:
    subnet: 10.20.0.0/24
  back:   # the databases
    subnet: 10.30.0.0/24
    internal: true

containers:
  web:
    networks: [front, back]
    ports:
      - "8080:80"
# a comment at the margin, inside the section
  api:
    networks:
      front:
        aliases: [rest]
      back: {}
    ports: ["9000:9000/udp"]

  db:
    networks: [back]
"""

# (what the edit does, old text, new text): each breaks one container, or changes one.
EDITS = [
    ("bad port", '      - "8080:80"', '      - "8080:99999"'),
    ("unknown network", "    networks: [back]\n", "    networks: [nowhere]\n"),
    ("unquoted port", '    ports: ["9000:9000/udp"]', "    ports: [9000:9000]"),
    (
        "duplicate key in a container",
        "    networks: [back]\n",
        "    networks: [back]\n    networks: [front]\n",
    ),
    ("duplicate container", "  db:\n", "  web:\n"),
    ("tab", "    networks: [back]\n", "    networks:\t[back]\n"),
    ("unterminated quote", '      - "8080:80"', '      - "8080:80'),
    ("unclosed bracket", "    networks: [back]\n", "    networks: [back,\n"),
    (
        "alias",
        "  db:\n    networks: [back]\n",
        "  db:\n    networks: &n [back]\n  cache:\n    networks: *n\n",
    ),
    ("unknown key", "  db:\n", "  db:\n    colour: blue\n"),
    ("a tag", "    networks: [back]\n", "    networks: !!set {back}\n"),
    ("same static address", "      back: {}\n", "      back: {ipv4_address: 10.30.0.1}\n"),
    ("a container added", "  db:\n", "  cache:\n    networks: [back]\n  db:\n"),
    ("a container removed", "  db:\n    networks: [back]\n", ""),
    ("a port changed", '"8080:80"', '"8081:80"'),
    ("a comment added", "  db:\n", "  # the database\n  db:\n"),
    ("a network renamed", "  back:   # the databases", "  rear:"),
    ("two documents", "version: 1\n", "version: 1\n---\n"),
    ("an indented entry", "  db:\n", "   db:\n"),
    ("a complex key", "  db:\n", "  ? db\n  :\n"),
    ("a multi-line quote at entry depth", '      - "8080:80"', '      - "8080:80\n  db2: x"'),
    ("a block scalar", "  db:\n", "  db:\n    netns: |\n      /run/netns/db\n"),
    ("an empty section", "containers:\n", "services:\ncontainers:\n"),
    ("a duplicate section", "version: 1\n", "version: 1\ncontainers: {}\n"),
]


def fresh(text: str) -> Spec | str:
    """The reference: a fresh parse's Spec, or its error exactly as printed."""
    try:
        return parse_spec_text(text, FILE)
    except SpecError as e:
        return str(e)


def again(reparser: Reparser, text: str) -> Spec | str:
    try:
        return reparser.spec(text, FILE)
    except SpecError as e:
        return str(e)


def primed(text: str = BASE) -> Reparser:
    reparser = Reparser()
    assert again(reparser, text) == fresh(text)
    return reparser


@pytest.mark.parametrize("what,old,new", EDITS, ids=[e[0] for e in EDITS])
def test_an_edit_parses_as_a_fresh_parse(what: str, old: str, new: str) -> None:
    assert old in BASE, what
    edited = BASE.replace(old, new, 1)
    reparser = primed()
    assert again(reparser, edited) == fresh(edited), what
    # And back: what the edit did not break is reused, and still right.
    assert again(reparser, BASE) == fresh(BASE)
    assert again(reparser, edited) == fresh(edited)


def test_broken_edits_report_the_fresh_parse_problems_at_their_lines() -> None:
    edited = BASE.replace('      - "8080:80"', '      - "8080:99999"').replace("[back]\n", "[nowhere]\n")
    result = again(primed(), edited)
    assert isinstance(result, str) and result == fresh(edited)
    assert f"{FILE}:16: containers.web.ports.0: invalid port mapping '8080:99999'" in result, result
    assert f"{FILE}:26: containers.db.networks.nowhere: unknown network 'nowhere'" in result, result


def test_unchanged_containers_keep_their_models_and_an_added_one_is_validated() -> None:
    reparser = primed()
    first = reparser.spec(BASE, FILE)
    added = BASE + "  cache:\n    networks: [back]\n"
    spec = reparser.spec(added, FILE)
    assert spec == parse_spec_text(added, FILE)
    assert all(spec.containers[name] is first.containers[name] for name in first.containers)


@pytest.mark.parametrize("path", SHIPPED + INVALID, ids=lambda p: p.name)
def test_every_spec_parses_as_a_fresh_parse(path: Path) -> None:
    text = path.read_text(errors="surrogateescape")
    assert again(Reparser(), text) == fresh(text)  # cold
    assert again(primed(), text) == fresh(text)  # after another spec
    reparser = Reparser()
    again(reparser, text)
    assert again(reparser, text) == fresh(text)  # after itself


LINES = st.sampled_from(
    [
        "  cache:",
        "    networks: [front]",
        "    networks: [nowhere]",
        '    ports: ["7000:70"]',
        '      - "8080:80',
        "    networks: [back,",
        "      front]",
        "  'quoted':",
        "  - a",
        "    netns: |",
        "      /run/netns/x",
        "# margin comment",
        "",
        "\t",
        "---",
        "containers:",
        "  db:",
        "    networks: &a [back]",
        "    networks: *a",
        "  web: {networks: [front]}",
        "services:",
        "   db:",
        "  yes:",
        "x: [",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.booleans(), LINES), min_size=1, max_size=4))
def test_random_line_edits_parse_as_a_fresh_parse(edits: list[tuple[int, bool, str]]) -> None:
    lines = BASE.split("\n")
    for at, replace, line in edits:
        at %= len(lines)
        lines[at : at + replace] = [line]
    edited = "\n".join(lines)
    reparser = primed()
    assert again(reparser, edited) == fresh(edited), edited
    assert again(reparser, BASE) == fresh(BASE)


def test_a_handed_directory_is_loaded_as_from_its_files(tmp_path: Path) -> None:
    networks = "version: 1\nnetworks:\n  front:\n    subnet: 10.20.0.0/24\n"
    containers = "version: 1\ncontainers:\n  web:\n    networks: [front]\n"

    def request(*files: tuple[str, str]) -> Request:
        return Request("specs", str(tmp_path), True, list(files), False, False, "text", False, None, True)

    specs = Specs(Parses())
    one = specs.load(request(("a.yaml", networks), ("b.yaml", containers)))
    assert one == parse_spec_text(networks + containers.removeprefix("version: 1\n"), FILE)
    more = containers + "  db:\n    networks: [front]\n"
    two = specs.load(request(("a.yaml", networks), ("b.yaml", more)))
    assert set(two.containers) == {"web", "db"} and two.containers["web"] is one.containers["web"]
    # A container in both files: the conflict a local load reports, naming both files.
    with pytest.raises(SpecError) as e:
        specs.load(
            request(("a.yaml", networks + "containers:\n  web:\n    networks: [front]\n"), ("b.yaml", more))
        )
    assert "specs/b.yaml:3: containers.web: is defined twice: also in specs/a.yaml:6" in str(e.value), str(
        e.value
    )


def test_the_spec_text_in_yaml_safe_dump_form_splits(tmp_path: Path) -> None:
    """The bench's (and many tools') form: lists at their key's indentation."""
    body = {"version": 1, "networks": {"n": {"subnet": "10.1.0.0/24"}}, "containers": {}}
    body["containers"] = {f"c{i}": {"networks": ["n"], "ports": [f"{20000 + i}:80"]} for i in range(50)}
    text = yaml.safe_dump(body, sort_keys=False)
    reparser = primed(text)
    plus = text + "  extra:\n    networks:\n    - n\n"
    assert reparser.data(plus, FILE) is not None  # split, not a full parse
    assert again(reparser, plus) == fresh(plus)


# Whole entries, valid YAML in unusual forms (a flow mapping over two lines, a multi-line quoted
# scalar, a block scalar, lists at their key's indentation), one of them a name BASE has already.
ENTRIES = st.sampled_from(
    [
        "  cache:\n    networks: [back]",
        "  cache: {networks: [front,\n      back]}",
        "  queue:\n    networks:\n    - front\n    ports:\n    - '7000:70'",
        "  db:\n    networks: [front]",
        "  # only a comment",
        '  log:\n    netns: "/run/netns/\n      log"\n    networks: [back]',
        "  z:\n    networks: [back]\n    netns: |-\n      /run/netns/z",
        "  q:\n    networks: [front]\n    ports: ['8080:81']",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["  web:", "  api:", "  db:", None]), ENTRIES), max_size=3))
def test_entries_added_in_any_form_parse_as_a_fresh_parse(inserts: list[tuple[str | None, str]]) -> None:
    reparser = primed()
    text = BASE
    for before, entry in inserts:
        text = text + entry + "\n" if before is None else text.replace(before, f"{entry}\n{before}", 1)
        assert again(reparser, text) == fresh(text), text


def test_a_handed_copy_of_the_followed_spec_shares_its_container_models(tmp_path: Path) -> None:
    """The daemon parses its own file and the handed specs with one `Parses`: a handed copy of the
    spec it follows is a new Spec whose containers are the followed one's models, so the part
    selection compares them by identity, and an added container is the only difference."""
    path = tmp_path / "spec.yaml"
    path.write_text(BASE)
    parses = Parses()
    followed = load_specs(path, parses)

    def handed(text: str) -> Spec:
        request = Request(str(path), "/", False, [(None, text)], False, False, "text", False, None, True)
        return Specs(parses).load(request)

    copy = handed(BASE)
    assert copy is not followed and copy == followed
    assert all(copy.containers[name] is model for name, model in followed.containers.items())
    assert reach(followed, copy) == set()
    added = BASE + "  extra:\n    networks: [front]\n"
    more = handed(added)
    assert reach(copy, more) == {"extra"} and more == parse_spec_text(added, FILE)
