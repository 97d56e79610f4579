"""Facts of the IP families that the spec's checks and the compiling both use, in a module without
pydantic: an apply that takes its compiled spec from the cache imports no spec model."""

from __future__ import annotations

IPV6_MIN_MTU = 1280  # below it the kernel turns IPv6 off on the interface
FAMILY = {4: "IPv4", 6: "IPv6"}
