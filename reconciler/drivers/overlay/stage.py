"""The overlay's part in one run of `engine.prepare`: the calls of `cluster.py` in their order."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import cluster
from .observe import observe_overlay

if TYPE_CHECKING:
    from ...model import State
    from ...spec import Spec
    from ...statedir import ScopeRecord
    from .clusteripam import Allocation


class ClusterStage:
    def __init__(self, scope: str) -> None:
        self.scope = scope
        self.observed = observe_overlay(scope)
        self.resources = self.observed.resources
        self.cluster: cluster.Cluster | None = None

    def narrow(self, spec: Spec, host: str | None, lock: Allocation | None, key_file: str) -> Spec:
        self.cluster = cluster.prepare(spec, self.scope, host, lock, self.observed, key_file)
        return cluster.local_spec(self.cluster)

    def _prepared(self) -> cluster.Cluster:
        assert self.cluster is not None, "narrow() comes first"
        return self.cluster

    def merge_record(self, record: ScopeRecord) -> None:
        cluster.merge_record(self._prepared(), record)

    def extend_desired(self, local: Spec, record: ScopeRecord, desired: State) -> None:
        cluster.extend_desired(self._prepared(), local, record, desired)

    def conflicts(self, local: Spec, desired: State, observed: State, foreign_links: set[str]) -> list[str]:
        return cluster.conflicts(desired, self.observed, foreign_links)
