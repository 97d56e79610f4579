"""The daemon's desired state: one spec file, or every `*.yaml` and `*.yml` of a directory merged into one.

A directory is typically a git checkout, so each file may hold a part of the spec: networks in one,
containers in another. Every file is parsed on its own (so each problem names its file and line),
then the parts are merged and validated as a whole. The same network or container defined in two
files, or files that disagree on `version` or `name`, are conflicts naming both files.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import Problem, SpecError
from ..spec import Spec
from ..specfiles import is_spec_name
from ..specload import FieldPath, Locate, load_spec, parse_spec_data, read_spec_text, validate_spec_data
from ..specreuse import Reparser, unlocated

SECTIONS = ("networks", "containers", "hosts", "services", "policies")
Parsed = tuple[dict[str, Any], Locate]


class Parses:
    """The daemon's parses of a spec, a file or a directory's files given as their texts: each parsed
    again where its text changed only (specreuse.py: an added container is one piece composed and
    one model validated). Any problem is a fresh parse's to report, so it is exactly `load_specs`'s."""

    def __init__(self) -> None:
        self._files: dict[str | None, Reparser] = {}  # by file name in a directory, None for a file
        self._merged = Reparser()  # a directory's merged data: its containers' models

    def spec(self, path: Path, directory: bool, files: list[tuple[str | None, str]]) -> Spec:
        if not directory:
            return self._reparser(None).spec(files[0][1], str(path))
        self._files = {name: self._files.get(name) or Reparser() for name, _ in files}
        parts = [self._reparser(name).data(text, str(path / str(name))) for name, text in files]
        spec = None if None in parts else self._merge([p for p in parts if p is not None])
        if spec is not None:
            return spec
        return from_parts([functools.partial(parse_spec_data, text, str(path / str(n))) for n, text in files])

    def _reparser(self, name: str | None) -> Reparser:
        return self._files.setdefault(name, Reparser())

    def _merge(self, parts: list[dict[str, Any]]) -> Spec | None:
        """The files' data merged and validated, or None for a problem (from_parts reports it)."""
        try:
            merged, _, conflicts = merge([(data, unlocated) for data in parts])
        except SpecError:
            return None
        return None if conflicts else self._merged.validated(merged)


def spec_files(path: Path) -> list[Path]:
    """The files PATH stands for: itself, or its `*.yaml` and `*.yml` files (not hidden ones: editors'
    temporaries)."""
    if not path.is_dir():
        return [path]
    return sorted(f for f in path.iterdir() if is_spec_file(f) and f.is_file())


def is_spec_file(path: Path) -> bool:
    """A directory's spec file by its name (what the watcher follows too)."""
    return is_spec_name(path.name)


def load_specs(path: Path, parses: Parses | None = None) -> Spec:
    """Read, merge and validate; raise SpecError listing every problem, each located. `parses`: the
    parses kept from the last call (the daemon's), reused where the text did not change."""
    if not path.is_dir():
        return load_spec(path) if parses is None else parses.spec(path, False, [(None, read_spec_text(path))])
    files = spec_files(path)
    if not files:
        raise SpecError([Problem((), "no *.yaml or *.yml spec files in this directory", str(path))])
    texts = _texts(files) if parses is not None else None
    if parses is not None and texts is not None:
        return parses.spec(path, True, texts)
    return from_parts([functools.partial(_parse_file, file) for file in files])


def _texts(files: list[Path]) -> list[tuple[str | None, str]] | None:
    """Each file's name and text; None when one cannot be read (from_parts reports every such file)."""
    try:
        return [(file.name, read_spec_text(file)) for file in files]
    except SpecError:
        return None


def _parse_file(file: Path) -> Parsed:
    return parse_spec_data(read_spec_text(file), str(file))


def from_parts(parsers: Sequence[Callable[[], Parsed]]) -> Spec:
    """One spec from a directory's files, each parsed by one of `parsers` (every file's problems are
    reported, then the conflicts between them)."""
    parts: list[Parsed] = []
    problems: list[Problem] = []
    for parse in parsers:
        try:
            parts.append(parse())
        except SpecError as e:
            problems.extend(e.problems)
    if problems:
        raise SpecError(problems)
    merged, locate, conflicts = merge(parts)
    try:
        spec = validate_spec_data(merged, locate)
    except SpecError as e:
        raise SpecError(conflicts + e.problems) from e
    if conflicts:
        raise SpecError(conflicts)
    return spec


def merge(parts: list[tuple[dict[str, Any], Locate]]) -> tuple[dict[str, Any], Locate, list[Problem]]:
    """One spec's data from several files', a `Locate` that finds each field in its own file, and the
    conflicts between the files. The merged data keeps each conflict's first side, so the rest of the
    spec is still checked; a section that is not a mapping is raised at once (what it held is unknown)."""
    merged: dict[str, Any] = {section: {} for section in SECTIONS}
    owners: dict[FieldPath, Locate] = {}
    problems: list[Problem] = []
    shapes: list[Problem] = []
    for data, locate in parts:
        for key, value in data.items():
            if key in SECTIONS and value is not None and not isinstance(value, dict):
                shapes.append(Problem((key,), "must be a mapping", *locate((key,))))
            elif key in SECTIONS:
                problems.extend(_merge_section(merged, owners, key, value or {}, locate))
            elif key == "name":
                continue
            elif key not in merged:
                merged[key], owners[(key,)] = value, locate
            elif merged[key] != value:
                problems.append(_conflict((key,), f"{value!r} differs", locate, owners))
    if shapes:
        raise SpecError(shapes)
    problems.extend(_name_conflicts(parts, merged, owners))
    first = parts[0][1]

    def located(path: FieldPath) -> tuple[str, int | None]:
        return owners.get(path[:2], owners.get(path[:1], first))(path)

    return merged, located, problems


def _merge_section(
    merged: dict[str, Any], owners: dict[FieldPath, Locate], section: str, value: Any, locate: Locate
) -> list[Problem]:
    problems = []
    for name, body in value.items():
        path: FieldPath = (section, name)
        if name in merged[section]:
            problems.append(_conflict(path, "is defined twice", locate, owners))
            continue
        merged[section][name], owners[path] = body, locate
    return problems


def _name_conflicts(
    parts: list[tuple[dict[str, Any], Locate]], merged: dict[str, Any], owners: dict[FieldPath, Locate]
) -> list[Problem]:
    """Every file must carry the same `name` (or none): it is the scope the whole directory owns."""
    (first, first_locate), problems = parts[0], []
    if "name" in first:
        merged["name"], owners[("name",)] = first["name"], first_locate
    for data, locate in parts[1:]:
        if data.get("name") != first.get("name"):
            file, _ = first_locate(("name",))
            what = f"{_named(data)} here but {_named(first)} in {file}: every file must name the same spec"
            problems.append(Problem(("name",), what, *locate(("name",))))
    return problems


def _named(data: dict[str, Any]) -> str:
    return f"{data['name']!r}" if data.get("name") is not None else "no name"


def _conflict(path: FieldPath, what: str, locate: Locate, owners: dict[FieldPath, Locate]) -> Problem:
    here = locate(path)
    first = owners.get(path)
    if first is None:
        return Problem(path, what, *here)
    file, line = first(path)
    return Problem(path, f"{what}: also in {file}:{line}", *here)
