"""The daemon's log: one line per reconcile (what changed, how long, why), as text or JSON lines."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from ..diff import Action, summary
from ..render import line

# A reconcile that changes thousands of objects names the first ones; the counts cover the rest.
MAX_NAMED = 20


@dataclass
class Reconciled:
    """One reconcile, as logged and counted."""

    trigger: str  # what started it: start, spec, drift, resync, signal (joined by '+')
    mode: str  # full or partial
    result: str  # applied, in_sync, invalid, failed, rolled_back
    duration: float
    actions: list[Action] = field(default_factory=list)
    error: str = ""
    revision: str = ""  # the git revision of the spec it tried (`main@sha1:...`; "" for files)
    problems: list[str] = field(default_factory=list)  # an invalid spec's, located


class Log:
    def __init__(self, fmt: str, stream: TextIO = sys.stderr) -> None:
        self.fmt = fmt
        self.stream = stream

    def reconciled(self, r: Reconciled) -> None:
        # Only the lines shown are rendered: a re-created table's 2,000 elements took 30 ms.
        changes = [line(a).strip() for a in r.actions[:MAX_NAMED]]
        counts = summary(r.actions)
        if self.fmt == "json":
            self._json(
                event="reconcile",
                trigger=r.trigger,
                mode=r.mode,
                result=r.result,
                duration_ms=round(r.duration * 1000, 1),
                **counts,
                changes=changes[:MAX_NAMED],
                **({"error": r.error} if r.error else {}),
                **({"revision": r.revision} if r.revision else {}),
            )
            return
        shown = "; ".join(changes[:MAX_NAMED]) + (" ..." if len(r.actions) > MAX_NAMED else "")
        text = (
            f"reconcile {r.result} trigger={r.trigger} mode={r.mode} duration={r.duration * 1000:.0f}ms "
            f"+{counts['add']} ~{counts['change']} -{counts['destroy']}"
        )
        revision = f" revision={r.revision}" if r.revision else ""
        self._text(text + revision + (f": {shown}" if shown else "") + (f": {r.error}" if r.error else ""))

    def event(self, event: str, text: str, **fields: Any) -> None:
        """A git event (fetch, refused revision): `text` in text logs, the fields in JSON lines."""
        if self.fmt == "json":
            self._json(event=event, **fields)
        else:
            self._text(text)

    def problems(self, lines: list[str]) -> None:
        """An invalid spec: each problem as FILE:LINE: field: message."""
        if self.fmt == "json":
            self._json(event="invalid_spec", problems=lines)
            return
        for problem in lines:
            self._text(problem)

    def message(self, text: str) -> None:
        if self.fmt == "json":
            self._json(event="message", message=text)
        else:
            self._text(text)

    def _text(self, text: str) -> None:
        self._line(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {text}")

    def _json(self, **fields: Any) -> None:
        self._line(json.dumps({"time": round(time.time(), 3), **fields}))

    def _line(self, line: str) -> None:
        # One write per line: print() writes the newline apart, and a helper thread (the DNS
        # resolver's supervisor) logging at the same time would split a line.
        self.stream.write(line + "\n")
        self.stream.flush()
