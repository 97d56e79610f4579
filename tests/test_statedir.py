"""The state directory's records: what a load gives after a save, by the same object (which keeps
the bytes it last read or wrote, to skip parsing them again) and by a fresh one."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.errors import ReconcilerError
from reconciler.statedir import NetworkRecord, ScopeRecord, StateDir


def record(*containers: str) -> ScopeRecord:
    addresses = {c: f"10.1.0.{i + 2}" for i, c in enumerate(containers)}
    return ScopeRecord({"n1": NetworkRecord("10.1.0.0/24", addresses)}, {"x": "/run/netns/x"})


def test_a_saved_record_loads_the_same_from_this_object_and_a_fresh_one(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.save("default", record("a", "b"))
    assert state.load("default") == StateDir(tmp_path).load("default") == record("a", "b")
    state.save("default", record("a", "b", "c"))
    assert state.load("default") == StateDir(tmp_path).load("default") == record("a", "b", "c")


def test_a_loaded_record_is_a_copy(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    saved = record("a")
    state.save("default", saved)
    saved.networks["n1"].addresses["late"] = "10.1.0.9"  # the caller's object, changed after the save
    loaded = state.load("default")
    loaded.networks["n1"].addresses["b"] = "10.1.0.3"
    loaded.adopted.clear()
    assert state.load("default") == record("a")


def test_another_writers_record_is_read_not_the_one_kept(tmp_path: Path) -> None:
    """Another run (a CLI apply of this scope between two of a daemon's) writes by rename: the
    content differs, so the next load parses it."""
    mine, theirs = StateDir(tmp_path), StateDir(tmp_path)
    mine.save("default", record("a"))
    assert mine.load("default") == record("a")
    theirs.save("default", record("a", "b"))
    assert mine.load("default") == record("a", "b")
    theirs.remove("default")
    assert mine.load("default") == ScopeRecord()
    (tmp_path / "default.json").write_text("{not json")
    with pytest.raises(ReconcilerError, match="is unreadable"):
        mine.load("default")
