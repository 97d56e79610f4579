"""Terminal niceties: colour (only on a TTY, never with NO_COLOR) and a one-line progress bar on stderr.

Kept dependency-free and cheap to import: the CLI must start fast.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

RESET = "\033[0m"
# Terraform's palette for plan lines, keyed by the sign a plan line starts with.
PLAN_COLOURS = {"+": "\033[32m", "~": "\033[33m", "-/+": "\033[35m", "-": "\033[31m"}
BOLD = "\033[1m"
# Redrawing more often than this only costs time on a fast apply.
REDRAW_SECONDS = 0.1
BAR_WIDTH = 24


def colour_enabled(stream: TextIO) -> bool:
    """https://no-color.org: any non-empty NO_COLOR turns colour off; so does a stream that is no TTY."""
    return not os.environ.get("NO_COLOR") and stream.isatty()


def colour_plan(text: str) -> str:
    lines = []
    for line in text.split("\n"):
        sign = line.strip().split(" ", 1)[0]
        if sign in PLAN_COLOURS:
            line = f"{PLAN_COLOURS[sign]}{line}{RESET}"
        elif line.startswith(("Plan:", "No changes.")):
            line = f"{BOLD}{line}{RESET}"
        lines.append(line)
    return "\n".join(lines)


class Bar:
    """`[#####.....] 12/40 iface web/mybridge` redrawn in place on stderr; erased when done."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.total = 0
        self.count = 0
        self._drawn_at = 0.0
        self._width = 0

    def phase(self, text: str) -> None:
        self._draw(f"{text}...", force=True)

    def start(self, total: int) -> None:
        self.total, self.count = total, 0

    def advance(self, what: str) -> None:
        self.count += 1
        filled = BAR_WIDTH * self.count // max(self.total, 1)
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        self._draw(f"[{bar}] {self.count}/{self.total} {what}", force=self.count == self.total)

    def done(self) -> None:
        if self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

    def _draw(self, text: str, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._drawn_at < REDRAW_SECONDS:
            return
        self._drawn_at = now
        text = text[:79]
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)


def progress_bar(quiet: bool, stream: TextIO = sys.stderr) -> Bar | None:
    """A bar for people watching a terminal; None for scripts, pipes, logs and -q."""
    return None if quiet or not stream.isatty() else Bar(stream)
