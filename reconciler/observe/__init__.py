"""Kernel -> observed state: what exists now, in the same model as the desired state."""

from .host import Observed, observe

__all__ = ["Observed", "observe"]
