"""`python -m reconciler.dns --state-dir DIR`: the resolver process (started by supervise.py)."""

from __future__ import annotations

import argparse
import sys

from .process import run

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m reconciler.dns", description=__doc__)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--resolv-conf", default="/etc/resolv.conf", help="the host's upstream servers")
    args = parser.parse_args()
    sys.exit(run(args.state_dir, args.resolv_conf))
