"""`python -m bench.counted ARGS`: the reconciler CLI, then its netlink requests and nft transactions
written to $BENCH_STATS (the same code path as `reconciler ARGS`)."""

from __future__ import annotations

import json
import os
import sys

from reconciler import cli
from reconciler.nft import Nft
from reconciler.rtnl import Stats

if __name__ == "__main__":
    rc = cli.main(sys.argv[1:])
    with open(os.environ["BENCH_STATS"], "w") as f:
        json.dump({"netlink": Stats.requests, "nft": Nft.transactions}, f)
    sys.exit(rc)
