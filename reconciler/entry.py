"""The `reconciler` command (console script and `python -m reconciler`): a plainly written `apply`
goes straight to a running daemon (client.py) before anything else is imported; the rest, and an
apply the daemon leaves to us, goes to the CLI (cli.py). argparse, the CLI's option tables and the
error classes cost a thin apply more than its own work, so the common path loads none of them.
"""

from __future__ import annotations

import sys

from . import client
from .guard import guarded


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
