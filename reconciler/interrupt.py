"""SIGINT and SIGTERM during an apply, handled as Terraform does.

While the host is being changed (`changing()`), the first signal only sets a flag: the action in flight
finishes (so every object it created carries its mark), and the executors raise `Interrupted` before
the next one (`check()`), which the apply handles as a failure: roll back, or stop with --no-rollback.
A rollback (`rolling_back()`) is never cut short by a first signal. A second signal stops at once
(KeyboardInterrupt), whatever is in flight; the intent journal lets the next apply clean up what that
leaves unmarked. Outside `changing()` nothing needs finishing, and the first signal stops at once.
Nothing of this is active unless the CLI installed the handlers (`handled`).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from types import FrameType

from .errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _State:
    changing = False
    rolling_back = False
    received: signal.Signals | None = None  # the first signal while changing
    pending = False  # received and not yet turned into Interrupted
    notify: Callable[[signal.Signals, bool], None] = staticmethod(lambda signum, rolling_back: None)


_state = _State()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if not _state.changing or _state.received is not None:
        raise KeyboardInterrupt
    _state.received = signal.Signals(signum)
    _state.pending = True
    _state.notify(_state.received, _state.rolling_back)


@contextlib.contextmanager
def handled(notify: Callable[[signal.Signals, bool], None]) -> Iterator[None]:
    """Install the handlers for one CLI run; `notify(signal, rolling_back)` is told of the first
    signal received while changing."""
    previous = {s: signal.signal(s, _on_signal) for s in SIGNALS}
    _state.notify = notify
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _state.notify = _State.notify
        _state.received, _state.pending = None, False


@contextlib.contextmanager
def changing() -> Iterator[None]:
    """The host is being changed: a first signal waits for the action in flight."""
    _state.changing = True
    try:
        yield
    finally:
        _state.changing = False


@contextlib.contextmanager
def rolling_back() -> Iterator[None]:
    """A rollback runs: a first signal lets it finish."""
    _state.rolling_back = True
    try:
        yield
    finally:
        _state.rolling_back = False


def check() -> None:
    """Between two actions: raise Interrupted once for a signal received during the one before."""
    if _state.pending and not _state.rolling_back:
        _state.pending = False
        assert _state.received is not None
        raise Interrupted(f"interrupted by {_state.received.name}")


def received() -> signal.Signals | None:
    """The signal received while changing, if any (it may have come after the last check)."""
    return _state.received
