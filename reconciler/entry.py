"""The `reconciler` command (console script and `python -m reconciler`): a plainly written `apply`
goes straight to a running daemon (client.py) before anything else is imported; the rest, and an
apply the daemon leaves to us, goes to the CLI (cli.py). argparse, the CLI's option tables and the
error classes cost a thin apply more than its own work, so the common path loads none of them.
"""

from __future__ import annotations

import os
import sys

from . import client

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (mypy reads the name)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    T = TypeVar("T")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    options = client.apply_options(args)
    if options is not None:
        code = guarded(lambda: client.hand_over(options))
        if code is not None:
            return code
        args = [*args, "--local"]  # the daemon left it to us (or none runs): ask it only once
    from .cli import main as cli_main

    return cli_main(args)


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
