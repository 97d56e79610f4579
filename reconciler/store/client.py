"""etcd through its v3 JSON gateway (etcd3gw), over every endpoint of the cluster in turn.

etcd3gw talks to one member; a cluster is there so that one member may be down. Each call goes to the
member that answered last and moves on to the next one when it cannot be reached, so a stopped member
costs one refused connection. Transactions and ranges are written as the gateway's JSON (keys and
values base64), the same requests etcdctl sends over gRPC.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from etcd3gw.client import Etcd3Client
from etcd3gw.exceptions import ConnectionFailedError, ConnectionTimeoutError, InternalServerError

from ..errors import ReconcilerError
from ..spec import ClusterStore

# A member that does not answer within this is treated as down: the next one is asked.
REQUEST_TIMEOUT = 5.0
T = TypeVar("T")


class StoreUnavailable(ReconcilerError):
    """No member of the etcd cluster could be reached (or none had a quorum)."""


class StreamEnded(Exception):
    """The watch stream closed (its member stopped): open it again, through another member if need be."""


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def prefix_end(prefix: str) -> str:
    """The end of the key range of every key starting with `prefix` (its last byte plus one)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


@dataclass(frozen=True)
class Entry:
    key: str
    value: str
    lease: int
    create_revision: int
    mod_revision: int


def entry(kv: dict[str, Any]) -> Entry:
    return Entry(
        unb64(kv["key"]),
        unb64(kv.get("value", "")),
        int(kv.get("lease", 0)),
        int(kv.get("create_revision", 0)),
        int(kv.get("mod_revision", 0)),
    )


class Client:
    def __init__(self, config: ClusterStore) -> None:
        self.endpoints = config.endpoints
        self._clients = [_member(url, config) for url in config.endpoints]
        self._current = 0
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return self.endpoints[self._current]

    def call(self, request: Callable[[Etcd3Client], T]) -> T:
        """`request` on the member that answered last, then on each other one; StoreUnavailable
        naming every member's failure when none answers."""
        with self._lock:
            first = self._current
        failures: list[str] = []
        for step in range(len(self._clients)):
            index = (first + step) % len(self._clients)
            try:
                result = request(self._clients[index])
            except (ConnectionFailedError, ConnectionTimeoutError, InternalServerError) as e:
                failures.append(f"{self.endpoints[index]}: {_reason(e)}")
                continue
            with self._lock:
                self._current = index
            return result
        raise StoreUnavailable("etcd unreachable (" + "; ".join(failures) + ")")

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        def send(member: Etcd3Client) -> dict[str, Any]:
            result: dict[str, Any] = member.post(member.get_url(path), json=body)
            return result

        return self.call(send)

    def range(self, prefix: str) -> tuple[list[Entry], int]:
        """Every key under `prefix`, and the store revision they were read at."""
        result = self.post("/kv/range", {"key": b64(prefix), "range_end": b64(prefix_end(prefix))})
        return [entry(kv) for kv in result.get("kvs", [])], int(result["header"]["revision"])

    def txn(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.post("/kv/txn", body)

    def put(self, key: str, value: str, lease: int = 0) -> None:
        body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = lease
        self.post("/kv/put", body)

    def delete(self, key: str) -> None:
        self.post("/kv/deleterange", {"key": b64(key)})

    def grant(self, ttl: int) -> int:
        return int(self.post("/lease/grant", {"TTL": ttl, "ID": 0})["ID"])

    def keepalive(self, lease: int) -> int:
        """The lease's TTL after refreshing it; -1 when it has expired."""
        result = self.post("/lease/keepalive", {"ID": lease})
        return int(result.get("result", {}).get("TTL", -1))

    def watch(self, prefix: str, start_revision: int) -> Iterator[dict[str, Any]]:
        """The watch stream's responses (events, or a compaction notice) from `start_revision` on,
        through the member that answers; ends (or raises StoreUnavailable) when the stream breaks.
        etcd3gw's own watcher drops compaction notices and stream errors, which the caller needs."""
        body: dict[str, Any] = {
            "create_request": {
                "key": b64(prefix),
                "range_end": b64(prefix_end(prefix)),
                "start_revision": start_revision,
            }
        }

        def open_stream(member: Etcd3Client) -> requests.Response:
            try:
                response = member.session.post(
                    member.get_url("/watch"), json=body, stream=True, timeout=(REQUEST_TIMEOUT, None)
                )
            except requests.exceptions.ConnectionError as e:
                raise ConnectionFailedError(str(e)) from e
            if response.status_code != 200:
                response.close()
                raise ConnectionFailedError(f"watch: HTTP {response.status_code}")
            return response

        response = self.call(open_stream)
        try:
            for line in response.iter_lines():
                if line.strip():
                    yield json.loads(line).get("result", {})
        except requests.exceptions.RequestException as e:
            raise StreamEnded(str(e)) from e
        finally:
            response.close()
        raise StreamEnded("closed by the member")


def _member(url: str, config: ClusterStore) -> Etcd3Client:
    parts = urlsplit(url)
    member = Etcd3Client(
        host=(parts.hostname or "").strip("[]"),
        port=parts.port or 2379,
        protocol=parts.scheme,
        ca_cert=config.ca_file,
        cert_cert=config.cert_file,
        cert_key=config.key_file,
        timeout=REQUEST_TIMEOUT,
        api_path="/v3/",  # etcd 3.4 and later: no discovery request per client
    )
    return member


def _reason(e: Exception) -> str:
    text = getattr(e, "detail_text", None) or str(e)
    if "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "timed out"
    return text.splitlines()[0][:200] if text else type(e).__name__
