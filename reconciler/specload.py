"""Spec text to `Spec`: safe YAML, and every problem located as `FILE:LINE: field.path: message`.

The YAML is composed into a node tree, whose marks give each field path its line, and the tree is
turned into plain data by hand. That walk also refuses what PyYAML would let through: aliases (a few
lines of them expand to billions of values), absurd nesting, duplicate keys (PyYAML keeps the last),
keys that are not strings, and tags a spec has no use for.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails
from yaml.constructor import SafeConstructor

from .drivers.registry import spec_problems
from .errors import Problem, SpecError
from .policy.check import policy_problems
from .spec import Spec, semantic_problems
from .specrest import Rest

try:
    from yaml import CSafeLoader as _Loader
except ImportError:  # PyYAML built without libyaml
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

MAX_BYTES = 1 << 20
# The deepest real spec path is containers.NAME.networks.NAME.aliases.N: 6 levels.
MAX_DEPTH = 32
# Past this many, more problems only bury the first ones (a pasted file can have thousands).
MAX_PROBLEMS = 20

FieldPath = tuple[str | int, ...]
# Where a field path is written: (file, line).
Locate = Callable[[FieldPath], tuple[str, int | None]]

_TAG = "tag:yaml.org,2002:"
_KINDS = {
    _TAG + "map": "a mapping",
    _TAG + "seq": "a list",
    _TAG + "str": "a string",
    _TAG + "int": "a number",
    _TAG + "float": "a number",
    _TAG + "bool": "a boolean",
    _TAG + "null": "null",
    _TAG + "timestamp": "a date",
}
# When a value fits no branch of a union, pydantic reports once per branch; these say it once.
_NETWORK_FORMS = "must be a list of network names or a mapping of network name to options"
_UNION_MESSAGES = {("containers", "*", "networks"): _NETWORK_FORMS}
# pydantic messages that name Python types or read oddly for a YAML file.
_MESSAGES = {
    "missing": "required key is missing",
    "extra_forbidden": "unknown key",
    "model_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
}


def load_spec(path: str | os.PathLike[str]) -> Spec:
    """Read and validate a spec file; raise SpecError listing every problem, each located."""
    return parse_spec_text(read_spec_text(path), os.fspath(path))


def read_spec_text(path: str | os.PathLike[str]) -> str:
    """A spec file's text, refusing what is too large or not UTF-8."""
    filename = os.fspath(path)
    try:
        with open(filename, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise SpecError([Problem((), f"cannot read the spec: {e.strerror or e}", filename)]) from e
    if len(raw) > MAX_BYTES:
        raise _too_large(filename)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        message = f"not valid UTF-8: byte 0x{raw[e.start]:02x} at offset {e.start}"
        raise SpecError([Problem((), message, filename, line)]) from e
    return text


def parse_spec_text(text: str, filename: str) -> Spec:
    """Validate spec text as `load_spec` does; `filename` only labels the problems."""
    data, lines = parse_spec_data(text, filename)
    return validate_spec_data(data, lines)


def parse_spec_data(text: str, filename: str) -> tuple[dict[str, Any], Locate]:
    """Spec text -> plain data, and where each field path of it is written (for `validate_spec_data`)."""
    if len(text) > MAX_BYTES:
        raise _too_large(filename)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as e:
        message = f"invalid character {text[e.start]!r} (a lone surrogate)"
        raise SpecError([Problem((), message, filename, _line_at(text, e.start))]) from e
    if size > MAX_BYTES:
        raise _too_large(filename)
    tree = Tree(filename)
    return tree.build_root(compose(text, filename)), tree.locate


def validate_spec_data(data: dict[str, Any], locate: Locate) -> Spec:
    """Plain data -> Spec, every problem placed by `locate` (which may span several files).

    Every problem is reported, once: what fails the shape checks (pydantic) is left out of the
    whole-spec checks, which then run on the rest and do not report again what follows from it."""
    rest = Rest(data)
    found = rest.shape_problems(_pydantic_problems)
    if rest.spec is not None:
        found += [(rest.original(p.path), p.message) for p in semantic_problems(rest.spec, rest.broken)]
        found += [(rest.original(p.path), p.message) for p in spec_problems(rest.spec, rest.broken)]
        found += [(rest.original(p.path), p.message) for p in policy_problems(rest.spec, rest.broken)]
    if found or rest.spec is None:
        raise _spec_error([Problem(path, message, *locate(path)) for path, message in found])
    return rest.spec


def _too_large(filename: str) -> SpecError:
    return SpecError([Problem((), f"the spec is larger than {MAX_BYTES // 1024} KiB", filename)])


def _line_at(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def compose(text: str, filename: str) -> yaml.Node | None:
    """Spec text -> its YAML node tree (with marks), or a SpecError placing what does not parse."""
    # Composing is linear even for an alias bomb: an alias becomes a second reference to its node.
    try:
        return yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as e:
        raise SpecError([_yaml_problem(e, text, filename)]) from e
    except RecursionError as e:
        # Only the pure-Python composer recurses per level; libyaml stops at 1000 levels by itself.
        raise SpecError([Problem((), f"nested deeper than {MAX_DEPTH} levels", filename)]) from e


def _yaml_problem(e: yaml.YAMLError, text: str, filename: str) -> Problem:
    if isinstance(e, yaml.reader.ReaderError):
        # The reader stops at the first unacceptable character, so its first occurrence is the culprit.
        index = text.find(chr(e.character))
        line = _line_at(text, index) if index >= 0 else None
        return Problem((), f"invalid YAML: unacceptable character #x{e.character:04x}", filename, line)
    if not isinstance(e, yaml.MarkedYAMLError) or e.problem_mark is None:
        return Problem((), f"invalid YAML: {e}", filename)
    # An unterminated quote or bracket is found at the end of the stream: point at the last real line.
    line = min(e.problem_mark.line + 1, text.rstrip().count("\n") + 1)
    message = e.problem or "syntax error"
    if e.context:
        started = e.context_mark.line + 1 if e.context_mark else line
        context = e.context if started == line else f"{e.context} (line {started})"
        message = f"{context}, {message}"
    if "\t" in text.split("\n")[line - 1]:
        message += "; tabs cannot indent YAML, use spaces"
    return Problem((), f"invalid YAML: {message}", filename, line)


class Tree:
    """Plain data from a node tree, with the line of every field path it holds."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.lines: dict[FieldPath, int] = {}
        self.problems: list[Problem] = []
        self._scalars = SafeConstructor()
        self._seen: set[int] = set()

    def build_root(self, root: yaml.Node | None) -> dict[str, Any]:
        if root is None or root.tag == _TAG + "null":
            raise SpecError([Problem((), "the spec is empty", self.filename, 1)])
        if not isinstance(root, yaml.MappingNode) or root.tag != _TAG + "map":
            message = f"the spec must be a mapping of version, networks and containers, not {_kind(root)}"
            raise SpecError([Problem((), message, self.filename, _line(root))])
        self.lines[()] = _line(root)
        data = self.mapping(root, ())
        if self.problems:
            raise _spec_error(self.problems)
        return data

    def locate(self, path: FieldPath) -> tuple[str, int | None]:
        return self.filename, self._line_of(path)

    def _line_of(self, path: FieldPath) -> int | None:
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                return self.lines[path[:n]]
        return None

    def _problem(self, path: FieldPath, message: str, node: yaml.Node) -> None:
        self.problems.append(Problem(path, message, self.filename, _line(node)))

    def _visit(self, node: yaml.Node, path: FieldPath) -> None:
        if id(node) in self._seen:
            # The composer resolves an alias to the anchored node itself: meeting a node twice is an alias.
            message = f"YAML aliases are not supported: write out the value anchored at line {_line(node)}"
            raise SpecError([Problem(path, message, self.filename, self._line_of(path))])
        self._seen.add(id(node))
        if len(path) > MAX_DEPTH:
            raise SpecError(
                [Problem((), f"nested deeper than {MAX_DEPTH} levels", self.filename, _line(node))]
            )

    def _build(self, node: yaml.Node, path: FieldPath) -> object:
        self._visit(node, path)
        if node.tag == _TAG + "str":
            return node.value
        if node.tag not in _KINDS:
            self._problem(path, f"YAML tag {_short_tag(node.tag)} is not supported", node)
            return None
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return self._sequence(node, path)
        return self._scalars.construct_object(node)

    def mapping(self, node: yaml.MappingNode, path: FieldPath) -> dict[str, object]:
        out: dict[str, object] = {}
        for key_node, value_node in node.value:
            key = self._key(key_node, path)
            if key is None:
                continue
            if key in out:
                first = self.lines[(*path, key)]
                self._problem((*path, key), f"duplicate key {key!r} (first at line {first})", key_node)
                continue
            self.lines[(*path, key)] = _line(key_node)
            out[key] = self._build(value_node, (*path, key))
        return out

    def _key(self, node: yaml.Node, path: FieldPath) -> str | None:
        self._visit(node, path)
        if node.tag == _TAG + "str":
            return str(node.value)
        if node.tag == _TAG + "merge":
            self._problem(path, "YAML merge keys (<<) are not supported", node)
        elif node.tag not in _KINDS:
            self._problem(path, f"YAML tag {_short_tag(node.tag)} is not supported", node)
        elif isinstance(node, yaml.ScalarNode):
            shown = node.value or "(empty)"
            self._problem(path, f"key {shown} is {_kind(node)}, not a string: quote it", node)
        else:
            self._problem(path, f"a key must be a string, not {_kind(node)}", node)
        return None

    def _sequence(self, node: yaml.SequenceNode, path: FieldPath) -> list[object]:
        out: list[object] = []
        for index, item_node in enumerate(node.value):
            item = self._build(item_node, (*path, index))
            # Recorded after _build: an aliased item's node carries the anchor's line, not its own.
            self.lines[(*path, index)] = _line(item_node)
            # semantic_problems names a list-form network attachment by its name, not its index.
            if isinstance(item, str):
                self.lines.setdefault((*path, item), _line(item_node))
            out.append(item)
        return out


def _spec_error(problems: list[Problem]) -> SpecError:
    ordered = sorted(dict.fromkeys(problems), key=lambda p: p.line or 0)
    if len(ordered) > MAX_PROBLEMS:
        hidden = Problem((), f"... and {len(ordered) - MAX_PROBLEMS} more problems", ordered[0].file)
        ordered = [*ordered[:MAX_PROBLEMS], hidden]
    return SpecError(ordered)


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _kind(node: yaml.Node) -> str:
    return _KINDS.get(node.tag, _short_tag(node.tag))


def _short_tag(tag: str) -> str:
    return tag.replace(_TAG, "!!")


def _pydantic_problems(err: ValidationError, data: dict[str, Any]) -> list[tuple[FieldPath, str]]:
    found: list[tuple[FieldPath, str]] = []
    union_misses: dict[FieldPath, list[str]] = {}
    unions_entered: set[FieldPath] = set()
    for detail in err.errors():
        path, union = _clean_loc(detail, data)
        message = _message(detail)
        if union is None:
            found.append((path, message))
        elif path == union:
            union_misses.setdefault(path, []).append(message)
        else:
            unions_entered.add(union)
            found.append((path, message))
    for path, messages in union_misses.items():
        # An error inside one branch means the value has that branch's shape: the others are noise.
        if path not in unions_entered:
            found.append((path, _union_message(path, messages)))
    return found


def _clean_loc(detail: ErrorDetails, data: object) -> tuple[FieldPath, FieldPath | None]:
    """pydantic's loc reduced to YAML keys and list indexes, and the path of the first union crossed.

    A segment that does not name something in the data is a pydantic label for a union branch
    (`list[str]`, `dict[str,nullable[Attachment]]`, ...) unless it is the key reported missing.
    """
    path: list[str | int] = []
    union: FieldPath | None = None
    node = data
    loc = detail["loc"]
    for index, segment in enumerate(loc):
        child = _child(node, segment)
        if child is not _ABSENT:
            node = child
        elif not (detail["type"] == "missing" and index == len(loc) - 1):
            if union is None:
                union = tuple(path)
            continue
        path.append(segment)
    return tuple(path), union


_ABSENT = object()


def _child(node: object, segment: str | int) -> object:
    if isinstance(node, dict):
        return node.get(segment, _ABSENT)
    if isinstance(node, list) and isinstance(segment, int) and 0 <= segment < len(node):
        return node[segment]
    return _ABSENT


def _message(detail: ErrorDetails) -> str:
    message = _MESSAGES.get(detail["type"], detail["msg"]).removeprefix("Value error, ")
    value = detail["input"]
    if detail["type"].endswith("_type") and isinstance(value, str | int | float | bool):
        message += f", got {value!r}"
    return message


def _union_message(path: FieldPath, messages: list[str]) -> str:
    for pattern, message in _UNION_MESSAGES.items():
        if len(pattern) == len(path) and all(p in ("*", s) for p, s in zip(pattern, path, strict=True)):
            return message
    return " or ".join(dict.fromkeys(messages))
