"""A thin session over libnftables' JSON API: one batch per call, so every call is one transaction."""

from __future__ import annotations

import json
from typing import Any

from .errors import ApplyFailed, HostConflict


class Nft:
    transactions = 0  # process-wide, for the benchmark's counts

    def __init__(self) -> None:
        try:
            import nftables
        except (ImportError, OSError) as e:
            raise HostConflict(f"nftables support is missing: {e} (install Debian's nftables package)") from e
        self._nft = nftables.Nftables()
        self._nft.set_json_output(True)
        self._nft.set_handle_output(False)

    def list_table(self, family: str, name: str) -> list[dict[str, Any]] | None:
        """The table's objects in JSON form, or None when the table does not exist."""
        rc, out, err = self._nft.json_cmd(
            {"nftables": [{"list": {"table": {"family": family, "name": name}}}]}
        )
        if rc != 0:
            if "No such file or directory" in err:
                return None
            raise ApplyFailed(f"nft list table {family} {name}: {err.strip()}")
        objects: list[dict[str, Any]] = (
            json.loads(out)["nftables"] if isinstance(out, str) else out["nftables"]
        )
        return objects

    def list_tables(self) -> list[tuple[str, str]]:
        """(family, name) of every table on the host."""
        rc, out, err = self._nft.json_cmd({"nftables": [{"list": {"tables": {}}}]})
        if rc != 0:
            raise ApplyFailed(f"nft list tables: {err.strip()}")
        objects = json.loads(out)["nftables"] if isinstance(out, str) else out["nftables"]
        return [(o["table"]["family"], o["table"]["name"]) for o in objects if "table" in o]

    def transaction(self, commands: list[dict[str, Any]]) -> None:
        if not commands:
            return
        rc, _, err = self._nft.json_cmd({"nftables": commands})
        Nft.transactions += 1
        if rc != 0:
            raise ApplyFailed(f"nftables transaction failed (nothing was changed): {err.strip()}")
