"""Every network driver, by the name a spec gives it: the one place that lists them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .bridge.driver import BridgeDriver
from .driver import Driver
from .macvlan.driver import MacvlanDriver
from .overlay.driver import OverlayDriver

if TYPE_CHECKING:
    from ..errors import Problem
    from ..spec import Broken, Network, Spec

DRIVERS: dict[str, Driver] = {d.name: d for d in (BridgeDriver(), MacvlanDriver(), OverlayDriver())}
# Container interfaces made as children of a host link: their driver by link kind and by mode.
CHILDREN: dict[str, Driver] = {d.child_kind: d for d in DRIVERS.values() if d.child_kind}
CHILD_MODES: dict[str, Driver] = {m: d for d in DRIVERS.values() for m in d.child_modes}
# The driver that owns each resource kind beyond the core's.
KIND_OWNERS: dict[str, Driver] = {k: d for d in DRIVERS.values() for k in d.kinds}


def driver_of(net: Network) -> Driver:
    return DRIVERS[net.driver]


def spec_problems(spec: Spec, broken: Broken) -> list[Problem]:
    """Every driver's checks of a spec beyond those of `spec.py`; `broken`: what failed the shape checks."""
    return [p for d in DRIVERS.values() for p in d.problems(spec, broken)]
