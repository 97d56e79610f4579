"""Progress of a running apply, reported to whoever listens (a terminal bar, or no one).

The engine and the executors report phases and steps here instead of taking a callback through every
signature: a listener is installed for the duration of one run with `listening()`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Protocol


class Listener(Protocol):
    def phase(self, text: str) -> None: ...

    def start(self, total: int) -> None: ...

    def advance(self, what: str) -> None: ...

    def done(self) -> None: ...


_listener: ContextVar[Listener | None] = ContextVar("progress_listener", default=None)


@contextlib.contextmanager
def listening(listener: Listener | None) -> Iterator[None]:
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)
        if listener is not None:
            listener.done()


def phase(text: str) -> None:
    """A step without a count: observing, planning."""
    if (listener := _listener.get()) is not None:
        listener.phase(text)


def start(total: int) -> None:
    """The counted part begins: `total` actions to carry out."""
    if (listener := _listener.get()) is not None:
        listener.start(total)


def advance(what: str) -> None:
    if (listener := _listener.get()) is not None:
        listener.advance(what)
