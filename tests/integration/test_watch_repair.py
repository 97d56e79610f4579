"""What a drift repair of the watch daemon reads and writes: only the kinds its hints name.

`repair_reads.py` runs one daemon inside the sandbox through its loop's steps (the hints its event
thread reports for a real hand change, then the reconcile they start) and counts, per repair, the
netlink requests, nft listings and nft transactions it made (the process-wide counters of
`reconciler/rtnl.py` and `reconciler/nft.py`), with what the kernel shows afterwards.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from sandbox import Host

pytestmark = pytest.mark.integration

DRIVER = Path(__file__).with_name("repair_reads.py")


@pytest.fixture(scope="module")
def repairs() -> dict[str, Any]:
    with Host() as host:
        proc = host.run([sys.executable, str(DRIVER), str(host.workdir)], timeout=300)
        results: dict[str, Any] = json.loads(proc.stdout)
        return results


def test_a_deleted_veth_is_repaired_without_reading_nft(repairs: dict[str, Any]) -> None:
    veth = repairs["veth"]
    assert veth["hinted"]["containers"] == ["web"] and not veth["hinted"]["nft"], veth
    assert veth["ok"] and veth["back"], veth
    assert veth["listings"] == 0 and veth["transactions"] == 0, veth
    assert veth["netlink"] > 0, veth  # it did read the links it repaired


def test_a_flushed_ruleset_is_recreated_in_one_transaction_and_verified(repairs: dict[str, Any]) -> None:
    flush = repairs["flush"]
    assert flush["hinted"] == {"containers": [], "nft": True, "host": False}, flush
    assert flush["ok"] and flush["bridges"], flush
    assert flush["ports"] == [[[{"concat": ["tcp", 8080]}, "10.20.0.2"]]], flush
    # One transaction re-creates the table; the verification listed it again; no link was read.
    assert flush["transactions"] == 1 and flush["listings"] > 0 and flush["netlink"] == 0, flush


def test_a_foreign_element_in_our_set_is_removed(repairs: dict[str, Any]) -> None:
    foreign = repairs["foreign"]
    assert foreign["hinted"]["nft"] and foreign["ok"], foreign
    assert foreign["bridges"], foreign  # ours as before, the foreign one gone
    assert foreign["transactions"] == 1 and foreign["netlink"] == 0, foreign
