"""What the engine and the daemon call around an apply: one line each in their code."""

from __future__ import annotations

from ..diff import Action
from ..drivers.overlay.clusteripam import Allocation
from ..model import State
from ..spec import Spec
from ..statedir import ScopeRecord, StateDir
from . import supervise
from .records import scope_records, service_vips


def before(state_dir: StateDir, actions: list[Action]) -> None:
    supervise.release(state_dir.path, actions)


def after(
    state_dir: StateDir, scope: str, spec: Spec, lock: Allocation | None, record: ScopeRecord, desired: State
) -> None:
    """The scope's records as the apply left them, served before this returns."""
    supervise.publish(state_dir.path, scope, scope_records(spec, record, desired, service_vips(spec, lock)))


def rolled_back(state_dir: StateDir) -> None:
    supervise.reload(state_dir.path)
