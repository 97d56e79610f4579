"""A part's verification in the watch daemon (a spec edit adding a container): it looks up the nft
elements the part changed instead of listing our tables, still catches an element missing from the
kernel, and its own commit's nft events leave no hint that would list the tables next.

`part_reads.py` runs one daemon inside the sandbox through its loop's steps and reports, per edit,
whether it applied, the nft listings and transactions it made, what was pending right after, and
the kernel's port map.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from sandbox import Host

pytestmark = pytest.mark.integration

DRIVER = Path(__file__).with_name("part_reads.py")


@pytest.fixture(scope="module")
def edits() -> dict[str, Any]:
    with Host() as host:
        proc = host.run([sys.executable, str(DRIVER), str(host.workdir)], timeout=300)
        results: dict[str, Any] = json.loads(proc.stdout)
        return results


def test_an_added_container_is_verified_without_listing_the_tables(edits: dict[str, Any]) -> None:
    added = edits["added"]
    assert added["ok"] and added["transactions"] == 1, added
    assert added["listings"] == 0, added
    assert [{"concat": ["tcp", 8081]}, 81] in added["ports"], added


def test_its_own_nft_events_leave_no_hint(edits: dict[str, Any]) -> None:
    after = edits["added"]["after"]
    assert not after["nft"], after


def test_an_element_missing_after_the_apply_fails_the_verification(edits: dict[str, Any]) -> None:
    deleted = edits["deleted"]
    # The verification failed and the apply was rolled back (its second transaction): no new veth.
    assert not deleted["ok"] and deleted["transactions"] == 2 and not deleted["veth"], deleted
    assert not any(e[0] == {"concat": ["tcp", 8082]} for e in deleted["ports"]), deleted
    assert edits["retried"], edits
    assert [{"concat": ["tcp", 8082]}, 82] in edits["retried_ports"], edits
