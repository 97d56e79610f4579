"""Errors become messages and exit codes at the command's edge, never tracebacks; shared by the thin
apply path (entry.py) and the CLI, so it imports nothing but what both already have."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (mypy reads the name)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    T = TypeVar("T")


def guarded(run: Callable[[], T]) -> T | int:
    """`run`, its errors reported as the CLI reports them: a message and an exit code, never a
    traceback. errors.py is imported only when one is raised."""
    try:
        return run()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `reconciler schema | head`: the reader left; Python would otherwise complain again at exit.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 141
    except Exception as e:
        from .errors import ReconcilerError, message

        if not isinstance(e, ReconcilerError):
            raise
        print(message(e), file=sys.stderr)
        return e.exit_code
