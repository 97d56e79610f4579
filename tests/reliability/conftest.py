from __future__ import annotations

import pytest
from figures import FIGURES, LABELS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    terminalreporter.section("reliability figures")
    for key, label in LABELS.items():
        if key in FIGURES:
            terminalreporter.write_line(f"{FIGURES[key]:>7}  {label}")
