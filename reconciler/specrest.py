"""What is left of a spec once the parts that fail their shape checks are left out.

The whole-spec checks run on the rest, so one bad port string does not hide the spec's other
problems. What was left out is `Broken`: a reference to it is not reported as a second error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from .spec import NOTHING_BROKEN, Broken, Spec, valid_name

FieldPath = tuple[str | int, ...]
Found = list[tuple[FieldPath, str]]
SECTIONS = ("networks", "containers", "hosts", "services", "policies")
# Lists whose items only add to the whole-spec checks: a bad item is left out alone, the rest of its
# object is still checked. Any other shape problem leaves its whole object out.
_LEAF_LISTS = {("containers", "ports"), ("services", "ports"), ("policies", "ports")}
# pydantic skips a mapping's own validator (the names of its keys) when a value inside fails: what is
# left is validated again, a few rounds at most (each round leaves out more).
_ROUNDS = 4


class Rest:
    """`spec`: the rest once `shape_problems` ran (None when it could not be built); `broken`: what was
    left out. `original` maps a path of the rest back to the data's."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._given = data
        self._data: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
        self._names: set[tuple[str, str]] = set()
        self._sections: set[str] = set()
        self._dropped: dict[FieldPath, set[int]] = {}
        self.spec: Spec | None = None
        self.broken = NOTHING_BROKEN

    def shape_problems(self, problems: Callable[[ValidationError, dict[str, Any]], Found]) -> Found:
        """Every shape problem (`problems` reads them from pydantic's error), each once."""
        found: Found = []
        for _ in range(_ROUNDS):
            try:
                self.spec = Spec.model_validate(self._data)
                break
            except ValidationError as e:
                new = [(self.original(path), message) for path, message in problems(e, self._data)]
                found += [p for p in new if p not in found]
                for path, _ in new:
                    self._leave_out(path)
                self._drop_items()
        self.broken = Broken(frozenset(self._names), frozenset(self._sections))
        return found

    def original(self, path: FieldPath) -> FieldPath:
        """Items left out of a list shift the later ones: the index they have in the data."""
        dropped = self._dropped.get(path[:3])
        if not dropped or len(path) < 4 or not isinstance(path[3], int):
            return path
        index = path[3]
        for gone in sorted(dropped):
            if gone <= index:
                index += 1
        return (*path[:3], index, *path[4:])

    def _leave_out(self, path: FieldPath) -> None:
        top = str(path[0]) if path else ""
        if top == "version":
            self._data["version"] = 1  # the only version there is: check the rest as one
        elif top not in SECTIONS:
            self._data.pop(top, None)  # `name`, unknown keys: nothing refers to them
        elif len(path) == 1:
            self._leave_out_section(top)
        elif len(path) > 3 and (top, path[2]) in _LEAF_LISTS and isinstance(path[3], int):
            self._dropped.setdefault(path[:3], set()).add(path[3])
        elif isinstance(self._data[top], dict) and str(path[1]) in self._data[top]:
            del self._data[top][str(path[1])]
            self._names.add((top, str(path[1])))

    def _leave_out_section(self, top: str) -> None:
        """A section's own problem is its shape, or names it cannot have (one problem for them all)."""
        section = self._data[top]
        bad = [n for n in section if not valid_name(n)] if isinstance(section, dict) else []
        if not bad:
            self._data[top] = {}
            self._sections.add(top)
        for name in bad:
            del section[name]
            self._names.add((top, name))

    def _drop_items(self) -> None:
        for (top, name, field), indexes in self._dropped.items():
            body = self._data[str(top)].get(name)
            items = self._given[str(top)][name][field]
            if isinstance(body, dict):
                kept = [item for i, item in enumerate(items) if i not in indexes]
                self._data[str(top)][name] = {**body, str(field): kept}
