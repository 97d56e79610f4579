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

SECTIONS = ("networks", "containers", "hosts", "services", "policies")
Parsed = tuple[dict[str, Any], Locate]


class Parses:
    """Each file's parse, kept while the file is the same (inode, size, mtime): an edit of one file of
    a directory re-parses that file only. Git and editors replace a file by rename (a new inode)."""

    def __init__(self) -> None:
        self._kept: dict[Path, tuple[tuple[int, int, int], Parsed]] = {}

    def parse(self, file: Path) -> Parsed:
        try:
            st = file.stat()
        except OSError:
            self._kept.pop(file, None)
            return parse_spec_data(read_spec_text(file), str(file))  # gone meanwhile: read says so
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        kept = self._kept.get(file)
        if kept is not None and kept[0] == stamp:
            return kept[1]
        parsed = parse_spec_data(read_spec_text(file), str(file))
        self._kept[file] = (stamp, parsed)
        return parsed

    def forget_except(self, files: list[Path]) -> None:
        self._kept = {f: self._kept[f] for f in files if f in self._kept}


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
    files' parses kept from the last call (the daemon's), reused for the files that did not change."""
    if not path.is_dir():
        return load_spec(path)
    files = spec_files(path)
    if not files:
        raise SpecError([Problem((), "no *.yaml or *.yml spec files in this directory", str(path))])
    parses = parses or Parses()
    parses.forget_except(files)
    return from_parts([functools.partial(parses.parse, file) for file in files])


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
