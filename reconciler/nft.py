"""A thin session over libnftables' JSON API: one batch per call, so every call is one transaction."""

from __future__ import annotations

import ctypes
import functools
import json
from collections.abc import Sequence
from typing import Any

from .errors import ApplyFailed, HostConflict


class Nft:
    transactions = 0  # process-wide, for the benchmark's counts
    listings = 0  # listings of tables, process-wide (what a drift repair read, for its tests)

    def __init__(self) -> None:
        try:
            import nftables
        except (ImportError, OSError) as e:
            raise HostConflict(f"nftables support is missing: {e} (install Debian's nftables package)") from e
        self._nft = nftables.Nftables()
        self._nft.set_json_output(True)
        self._nft.set_handle_output(False)
        # Numbers for protocols, named here: libnftables looks each element's protocol up in
        # /etc/protocols, half the time of listing our 2,000 port-map elements.
        self._nft.set_numeric_proto_output(True)

    def list_table(self, family: str, name: str) -> list[dict[str, Any]] | None:
        """The table's objects in JSON form, or None when the table does not exist."""
        Nft.listings += 1
        return self._list(family, name)

    def _list(
        self, family: str, name: str, kind: str = "table", table: str = ""
    ) -> list[dict[str, Any]] | None:
        what = {"family": family, "name": name, **({"table": table} if table else {})}
        rc, out, err = self._nft.json_cmd({"nftables": [{"list": {kind: what}}]})
        if rc != 0:
            if "No such file or directory" in err:
                return None
            raise ApplyFailed(f"nft list {kind} {family} {table} {name}: {err.strip()}")
        objects: list[dict[str, Any]] = (
            json.loads(out)["nftables"] if isinstance(out, str) else out["nftables"]
        )
        for obj in objects:
            body = obj.get("set") or obj.get("map")
            if body is not None and "elem" in body:
                _name_protocols(body)
        return objects

    def list_set(self, family: str, table: str, name: str) -> list[Any] | None:
        """One set's elements, or None when it does not exist (not counted: one set, not a table)."""
        objects = self._list(family, name, "set", table)
        if objects is None:
            return None
        return next((o["set"].get("elem", []) for o in objects if "set" in o), [])

    def get_element(self, family: str, table: str, name: str, key: str) -> str | None:
        """What the kernel prints for the element of set `name` whose key is `key` (nft syntax), or
        None when it has none: one lookup, not a listing of the set."""
        rc, out, _ = self._nft.cmd(f"get element {family} {table} {name} {{ {key} }}")
        return out if rc == 0 else None

    def list_tables(self) -> list[tuple[str, str]]:
        """(family, name) of every table on the host."""
        Nft.listings += 1
        rc, out, err = self._nft.json_cmd({"nftables": [{"list": {"tables": {}}}]})
        if rc != 0:
            raise ApplyFailed(f"nft list tables: {err.strip()}")
        objects = json.loads(out)["nftables"] if isinstance(out, str) else out["nftables"]
        return [(o["table"]["family"], o["table"]["name"]) for o in objects if "table" in o]

    def transaction(self, commands: Sequence[dict[str, Any] | str]) -> None:
        """Commit `commands` at once: libnftables JSON objects, or commands encoded as JSON already."""
        if not commands:
            return
        encoded = ",".join(c if isinstance(c, str) else json.dumps(c) for c in commands)
        rc, _, err = self._nft.cmd('{"nftables":[' + encoded + "]}")
        Nft.transactions += 1
        if rc != 0:
            raise ApplyFailed(f"nftables transaction failed (nothing was changed): {err.strip()}")


def _name_protocols(body: dict[str, Any]) -> None:
    """A listed set's or map's elements with the protocols named as libnftables names them."""
    kinds = body.get("type")
    fields = kinds if isinstance(kinds, list) else [kinds]
    at = [i for i, kind in enumerate(fields) if kind == "inet_proto"]
    if not at:
        return
    concat, is_map = isinstance(kinds, list), "map" in body

    def named(key: Any) -> Any:
        if isinstance(key, dict) and "elem" in key:  # an element with a timeout, comment or counter
            return {"elem": {**key["elem"], "val": named(key["elem"]["val"])}}
        if not concat:
            return _protocol(key)
        if not (isinstance(key, dict) and "concat" in key):
            return key
        parts = list(key["concat"])
        for i in at:
            if i < len(parts):
                parts[i] = _protocol(parts[i])
        return {"concat": parts}

    body["elem"] = [[named(e[0]), *e[1:]] if is_map else named(e) for e in body["elem"]]


def _protocol(value: Any) -> Any:
    """What libnftables prints for an inet_proto value: the system's name for it, else the number."""
    if isinstance(value, dict) and "range" in value:
        return {"range": [_protocol(n) for n in value["range"]]}
    return _protocol_name(value) if isinstance(value, int) else value


@functools.lru_cache(maxsize=256)
def _protocol_name(number: int) -> str | int:
    entry = _getprotobynumber(number)
    return entry.contents.p_name.decode() if entry else number


class _Protoent(ctypes.Structure):
    _fields_ = [
        ("p_name", ctypes.c_char_p),
        ("p_aliases", ctypes.POINTER(ctypes.c_char_p)),
        ("p_proto", ctypes.c_int),
    ]


_getprotobynumber = ctypes.CDLL(None).getprotobynumber
_getprotobynumber.argtypes = [ctypes.c_int]
_getprotobynumber.restype = ctypes.POINTER(_Protoent)
