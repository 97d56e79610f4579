"""What the engine and the daemon call around an apply: one line each in their code."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from ..diff import Action
from ..drivers.overlay.clusteripam import Allocation
from ..model import Netns, State
from ..statedir import ScopeRecord, StateDir
from . import supervise
from .records import Records, scope_records, service_vips, with_part

if TYPE_CHECKING:
    from ..spec import Spec


def before(state_dir: StateDir, actions: list[Action]) -> None:
    supervise.release(state_dir.path, actions)


# The records this process last published, per state directory and scope: what `after_part` updates.
_last: dict[tuple[str, str], Records] = {}


def after(
    state_dir: StateDir, scope: str, spec: Spec, lock: Allocation | None, record: ScopeRecord, desired: State
) -> None:
    """The scope's records as the apply left them, served before this returns."""
    _publish(state_dir, scope, scope_records(spec, record, desired, service_vips(spec, lock)))


def after_part(
    state_dir: StateDir, scope: str, spec: Spec, part: Collection[str], record: ScopeRecord, state: State
) -> None:
    """`after` for an apply of a part of `spec` (session.reach): the records last published with the
    part's containers as they are now (`state`: the scope's state after the apply, whose namespaces of
    the part are read). The whole records when this process has published none for the scope."""
    previous = _last.get((str(state_dir.path), scope))
    if previous is None:
        after(state_dir, scope, spec, None, record, state)
        return
    netns = {c: res.path for c in part if isinstance(res := state.resources.get((Netns.kind, c)), Netns)}
    _publish(state_dir, scope, with_part(previous, spec, part, record, netns))


def _publish(state_dir: StateDir, scope: str, records: Records) -> None:
    key = (str(state_dir.path), scope)
    _last.pop(key, None)  # a publish that fails leaves nothing to update
    supervise.publish(state_dir.path, scope, records)
    _last[key] = records


def rolled_back(state_dir: StateDir) -> None:
    supervise.reload(state_dir.path)
