"""Terminal output: colour only on a TTY without NO_COLOR; the progress bar only on a TTY without -q."""

from __future__ import annotations

import io

import pytest

from reconciler import progress
from reconciler.term import RESET, Bar, colour_enabled, colour_plan, progress_bar


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_needs_a_tty_and_no_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert colour_enabled(Tty())
    assert not colour_enabled(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not colour_enabled(Tty())
    monkeypatch.setenv("NO_COLOR", "")  # no-color.org: only a non-empty value counts
    assert colour_enabled(Tty())


def test_plan_lines_are_coloured_by_sign() -> None:
    plan = ["  + bridge a: x", "  ~ sysctl b", "-/+ netns c", "  - iface d", ""]
    text = "\n".join([*plan, "Plan: 1 to add, 1 to change, 2 to destroy."])
    lines = colour_plan(text).split("\n")
    assert lines[0] == f"\033[32m  + bridge a: x{RESET}"
    assert lines[1].startswith("\033[33m")
    assert lines[2].startswith("\033[35m")
    assert lines[3].startswith("\033[31m")
    assert lines[4] == ""
    assert lines[5] == f"\033[1mPlan: 1 to add, 1 to change, 2 to destroy.{RESET}"


def test_progress_bar_only_on_a_tty_without_quiet() -> None:
    assert isinstance(progress_bar(False, Tty()), Bar)
    assert progress_bar(True, Tty()) is None
    assert progress_bar(False, io.StringIO()) is None


def test_bar_draws_phases_and_steps_then_erases_itself() -> None:
    out = Tty()
    with progress.listening(Bar(out)):
        progress.phase("observing the host")
        progress.start(2)
        progress.advance("create bridge a")
        progress.advance("create netns b")
    text = out.getvalue()
    assert "\robserving the host..." in text
    assert "[########################] 2/2 create netns b" in text
    assert text.endswith("\r" + " " * len("[########################] 2/2 create netns b") + "\r")
