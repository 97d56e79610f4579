"""Prometheus metrics and `/healthz`, served from a thread of the daemon (`--metrics-address`)."""

from __future__ import annotations

import threading
from collections import Counter as Tally
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..model import KIND_ORDER, State
from .report import Reconciled

PREFIX = "netreconciler_watch"


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # `*_created` series say nothing here
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            f"{PREFIX}_reconciles", "Reconciles by result", ["result"], registry=self.registry
        )
        self.duration = Histogram(
            f"{PREFIX}_reconcile_duration_seconds",
            "Time from trigger handling to converged, by mode",
            ["mode"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.repairs = Counter(
            f"{PREFIX}_drift_repairs",
            "Objects repaired because the host drifted",
            ["kind"],
            registry=self.registry,
        )
        self.last_success = Gauge(
            f"{PREFIX}_last_success_timestamp_seconds",
            "Unix time of the last successful reconcile",
            registry=self.registry,
        )
        self.managed = Gauge(
            f"{PREFIX}_managed_objects", "Managed kernel objects by kind", ["kind"], registry=self.registry
        )
        # Named as the GitOps issue's contract spells them (Flux-style), without the daemon's prefix.
        self.applied_revision = Gauge(
            "reconciler_applied_revision_info",
            "The git revision applied last, per scope (value 1)",
            ["scope", "revision"],
            registry=self.registry,
        )
        self.attempted_revision = Gauge(
            "reconciler_attempted_revision_info",
            "The git revision tried last, per scope, and how that went (value 1)",
            ["scope", "revision", "result"],
            registry=self.registry,
        )
        self.fetch_failures = Counter(
            f"{PREFIX}_git_fetch_failures", "Failed fetches of the git remote", registry=self.registry
        )
        self.last_fetch = Gauge(
            f"{PREFIX}_git_last_fetch_timestamp_seconds",
            "Unix time of the last successful fetch of the git remote",
            registry=self.registry,
        )
        self.suspended = Gauge(
            f"{PREFIX}_suspended",
            "1 while suspended (`reconciler suspend`), by level: revisions or all",
            ["level"],
            registry=self.registry,
        )
        self.store_up = Gauge(
            "reconciler_store_up",
            "etcd mode: 1 while the cluster store answers, 0 while the data plane waits for it",
            ["scope"],
            registry=self.registry,
        )
        self._info: dict[tuple[str, str], tuple[str, ...]] = {}
        self.healthy = False

    def info(self, gauge: str, scope: str, *labels: str) -> None:
        """Point an info series of `scope` at new labels (the old series goes: one per scope)."""
        metric: Gauge = getattr(self, gauge)
        old = self._info.get((gauge, scope))
        if old is not None and old != (scope, *labels):
            metric.remove(*old)
        metric.labels(scope, *labels).set(1)
        self._info[(gauge, scope)] = (scope, *labels)

    def record(self, r: Reconciled, repaired: list[str], managed: State | None, at: float) -> None:
        self.reconciles.labels(r.result).inc()
        if r.result in ("applied", "in_sync"):
            self.duration.labels(r.mode).observe(r.duration)
            self.last_success.set(at)
        for kind, n in Tally(repaired).items():
            self.repairs.labels(kind).inc(n)
        if managed is not None:
            counts = Tally(kind for kind, _ in managed.resources)
            for kind in KIND_ORDER:
                self.managed.labels(kind).set(counts.get(kind, 0))
        # An invalid edit leaves the last good state applied: still healthy. A failed apply is not,
        # nor a rolled-back one (the host is as before it: not at the spec).
        if r.result != "invalid":
            self.healthy = r.result not in ("failed", "rolled_back")

    def serve(self, host: str, port: int) -> ThreadingHTTPServer:
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._reply(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    ok = metrics.healthy
                    self._reply(200 if ok else 503, b"ok\n" if ok else b"unhealthy\n", "text/plain")
                else:
                    self._reply(404, b"not found\n", "text/plain")

            def _reply(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # scrapes every few seconds would drown the reconcile log

        server = ThreadingHTTPServer((host, port), Handler)
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        return server
