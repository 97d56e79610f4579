"""The macvlan modes a spec may give, in a module of their own without pydantic: the spec's model
declares its field with them and the driver's hooks (imported on every apply) read them, one list
for both, without the hooks importing the spec's validation."""

from __future__ import annotations

from typing import Literal, get_args

Mode = Literal["bridge", "private", "vepa", "passthru"]
MODES: tuple[str, ...] = get_args(Mode)
