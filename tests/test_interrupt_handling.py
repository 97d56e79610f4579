"""interrupt.py on its own: a first signal while changing waits for check(), a second stops at once,
a rollback is never cut short by a first one, and nothing outside `changing()` waits."""

from __future__ import annotations

import signal

import pytest

from reconciler import interrupt
from reconciler.errors import Interrupted


def test_first_signal_waits_for_the_next_check_and_the_second_stops_at_once() -> None:
    told: list[tuple[signal.Signals, bool]] = []
    with interrupt.handled(lambda s, rolling_back: told.append((s, rolling_back))), interrupt.changing():
        signal.raise_signal(signal.SIGTERM)
        assert told == [(signal.SIGTERM, False)]
        with pytest.raises(Interrupted, match="interrupted by SIGTERM"):
            interrupt.check()
        interrupt.check()  # once only: the rollback that follows runs the executors again
        assert interrupt.received() == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert interrupt.received() is None


def test_a_rollback_is_not_cut_short_by_a_first_signal() -> None:
    told: list[tuple[signal.Signals, bool]] = []
    with interrupt.handled(lambda s, rolling_back: told.append((s, rolling_back))), interrupt.changing():
        with interrupt.rolling_back():
            signal.raise_signal(signal.SIGINT)
            interrupt.check()
        assert told == [(signal.SIGINT, True)]


def test_outside_changing_a_signal_stops_at_once() -> None:
    with interrupt.handled(lambda s, rolling_back: None):
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)
        interrupt.check()


def test_handlers_are_restored() -> None:
    before = {s: signal.getsignal(s) for s in interrupt.SIGNALS}
    with interrupt.handled(lambda s, rolling_back: None):
        assert all(signal.getsignal(s) is not before[s] for s in interrupt.SIGNALS)
    assert {s: signal.getsignal(s) for s in interrupt.SIGNALS} == before
    interrupt.check()  # not installed: a no-op
