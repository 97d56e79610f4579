"""A spec parsed again after a small edit (the daemon's handed-over applies): the parts whose text did
not change are neither composed, built nor validated again.

`Reparser.data(text)` gives what `specload.parse_spec_data` gives for the text, or None. It splits
the text at its top-level keys, and a section (`containers:`, ...) at its entries (`  web:`), looks
each piece up among the pieces of the last parse and composes only new ones, each alone. YAML reads
a piece alone as it reads it in place when the piece is whole block mapping entries: what a piece
would leave open for the next one (a quote, a bracket) fails to compose at the piece's end, and a
line less indented than a piece's first one ends it in place too. What the split cannot vouch for
is left to the full parse: tabs, line breaks other than `\\n`, a byte order mark, a top-level line
that is not `key:` (directives, `---`, an indented or sequence root), a duplicate. `Reparser.spec`
then validates with the models of the containers whose data did not change (pydantic takes a model
instance as it is). Whatever goes wrong, a problem included, is the full parse's to report: the
messages and lines are exactly those of `specload.parse_spec_text`.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from .errors import SpecError
from .spec import Container, Spec
from .specload import (
    MAX_BYTES,
    FieldPath,
    Tree,
    compose,
    parse_spec_data,
    parse_spec_text,
    validate_spec_data,
)
from .specrest import SECTIONS

# A top-level line: a plain key, then a value on the line or nothing (a block below).
_TOP = re.compile(r"([A-Za-z_][A-Za-z0-9_]*):(?: |\Z)")
# A section's header line with its block below; an entry's first line (after its indentation).
_SECTION = re.compile(r"(?P<key>[a-z]+): *(?:#.*)?\Z")
_ENTRY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*:(?: |\Z)")
_UNSPLIT = ("\t", "\r", "\x85", "\u2028", "\u2029", "\ufeff")

# A piece's text, and the section its entries belong to (None for a top-level piece).
Key = tuple[str | None, str]


class Reparser:
    """One file's parses: the pieces of the last one, and its containers' models."""

    def __init__(self) -> None:
        self._pieces: dict[Key, dict[str, Any]] = {}
        self._models: dict[str, tuple[object, Container]] = {}

    def spec(self, text: str, filename: str) -> Spec:
        """`specload.parse_spec_text(text, filename)`, reusing what did not change."""
        data = self.data(text, filename)
        spec = None if data is None else self.validated(data)
        return parse_spec_text(text, filename) if spec is None else spec

    def data(self, text: str, filename: str) -> dict[str, Any] | None:
        """The text's data, reusing the last parse's pieces; None when a full parse must read it
        (the split cannot vouch for the text, or there is a problem to report)."""
        pieces = _split(text) if _readable(text) else None
        if pieces is None:
            return None
        if not any(key in self._pieces for key in pieces):
            return self._first(text, filename, pieces)  # nothing to reuse: one compose is cheaper
        kept: dict[Key, dict[str, Any]] = {}
        data: dict[str, Any] = {}
        for key in pieces:
            part = self._pieces.get(key) or _parsed(key)
            if part is None or not _add(data, key[0], part):
                return None
            kept[key] = part
        self._pieces = kept
        return data

    def validated(self, data: dict[str, Any]) -> Spec | None:
        """`data` validated as `specload.validate_spec_data` does, unchanged containers by their last
        models; None when there is a problem (the full parse reports it, located)."""
        containers = data.get("containers")
        given = data
        if isinstance(containers, dict):
            given = {
                **data,
                "containers": {name: self._model(name, body) for name, body in containers.items()},
            }
        try:
            spec = validate_spec_data(given, unlocated)
        except SpecError:
            return None
        if isinstance(containers, dict):
            self._models = {name: (body, spec.containers[name]) for name, body in containers.items()}
        return spec

    def _model(self, name: str, body: object) -> object:
        last = self._models.get(name)
        if last is not None and (last[0] is body or last[0] == body):
            return last[1]
        return body

    def _first(self, text: str, filename: str, pieces: list[Key]) -> dict[str, Any] | None:
        """A full parse, its data then kept by piece for the next parse."""
        try:
            data, _ = parse_spec_data(text, filename)
        except SpecError:
            return None
        kept: dict[Key, dict[str, Any]] = {}
        split = [section for section, _ in pieces if section is not None]
        for name in set(split):
            # Every entry starts a piece, but a piece can start inside an entry's multi-line scalar.
            if not isinstance(data.get(name), dict) or len(data[name]) != split.count(name):
                return data  # the split and the parse disagree: keep nothing (the data is the parse's)
        names = {name: iter(data[name]) for name in split}
        for key in pieces:
            section, piece = key
            where = data if section is None else data[section]
            name = piece.split(":", 1)[0] if section is None else next(names[section])
            if name not in where:
                return data
            kept[key] = {name: where[name]}
        self._pieces = kept
        return data


def unlocated(path: FieldPath) -> tuple[str, int | None]:
    return "", None  # never shown: a problem sends the text to the full parse


def _add(data: dict[str, Any], section: str | None, part: dict[str, Any]) -> bool:
    """One piece's data into the spec's (a new mapping per split section: pieces are shared between
    parses); False on a duplicate, which the full parse reports."""
    target = data if section is None else data.setdefault(section, {})
    if any(key in target for key in part):
        return False
    target.update(part)
    return True


def _parsed(key: Key) -> dict[str, Any] | None:
    """A piece composed and built alone: a top-level key with its value, or one entry of a section
    (built at its place in the spec, so that the depth limit counts as in place); None when it does
    not compose or has a problem."""
    section, text = key
    try:
        root = compose(text, "")
    except SpecError:
        return None
    if not isinstance(root, yaml.MappingNode) or root.tag != "tag:yaml.org,2002:map" or len(root.value) != 1:
        return None
    tree = Tree("")
    try:
        part = tree.build_root(root) if section is None else tree.mapping(root, (section,))
    except SpecError:
        return None
    return None if tree.problems or len(part) != 1 else part


def _readable(text: str) -> bool:
    """What `parse_spec_data` checks before composing: the size, and no lone surrogate."""
    try:
        return len(text) <= MAX_BYTES and len(text.encode("utf-8")) <= MAX_BYTES
    except UnicodeEncodeError:
        return False


def _split(text: str) -> list[Key] | None:
    """The text's pieces in order: top-level pieces whole, the sections' as their entries (a section
    whose body is not plain `name:` entries whole); None when the text is not split at all."""
    if any(c in text for c in _UNSPLIT):
        return None
    lines = text.split("\n")
    tops = [i for i, line in enumerate(lines) if line and line[0] not in " #"]
    keys = [m[1] if (m := _TOP.match(lines[i])) else None for i in tops]
    if not tops or None in keys or len(set(keys)) != len(keys):
        return None  # a top-level line that is not `key:`, or a key twice: the full parse reports it
    if any(line.strip(" ") and not line.lstrip(" ").startswith("#") for line in lines[: tops[0]]):
        return None  # content before the first top-level key: an indented root
    out: list[Key] = []
    for start, end in zip(tops, [*tops[1:], len(lines)], strict=True):
        header = _SECTION.match(lines[start])
        entries = _entries(lines, start + 1, end) if header and header["key"] in SECTIONS else None
        if header is None or entries is None:
            out.append((None, "\n".join(lines[start:end])))
        else:
            out.extend((header["key"], entry) for entry in entries)
    return out


def _entries(lines: list[str], start: int, end: int) -> list[str] | None:
    """A section body's entries, each from its `name:` line to the next; None when the body is not
    only entries at one indentation (a list, a flow mapping, a complex key)."""
    indent = None
    starts: list[int] = []
    for i in range(start, end):
        stripped = lines[i].lstrip(" ")
        if not stripped or stripped[0] == "#":
            continue
        depth = len(lines[i]) - len(stripped)
        indent = depth if indent is None else indent
        if depth < indent:
            return None
        if depth == indent:
            if not _ENTRY.match(stripped):
                return None
            starts.append(i)
    if not starts:
        return None
    return ["\n".join(lines[a:b]) for a, b in zip(starts, [*starts[1:], end], strict=True)]
