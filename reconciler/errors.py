"""One exception hierarchy; the CLI maps each class to an exit code."""

from __future__ import annotations

from typing import NamedTuple


class Problem(NamedTuple):
    """One located problem in a spec: `FILE:LINE: field.path: message`. A named tuple, not a data
    class: the CLI imports this module first, and `dataclasses` costs a thin `apply` (client.py)
    more than all of its own code."""

    path: tuple[str | int, ...]
    message: str
    file: str = ""
    line: int | None = None

    def __str__(self) -> str:
        where = self.file or "<spec>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        field = ".".join(str(p) for p in self.path)
        return f"{where}: {field}: {self.message}" if field else f"{where}: {self.message}"


class ReconcilerError(Exception):
    """Base of every error the CLI reports without a traceback."""

    exit_code = 1


class SpecError(ReconcilerError):
    """The spec is invalid; carries every problem found, each located."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class HostConflict(ReconcilerError):
    """The spec cannot be applied on this host (missing kernel feature, clash with foreign objects)."""


class PermissionProblem(ReconcilerError):
    """The process lacks root / CAP_NET_ADMIN."""

    exit_code = 4


class LockBusy(ReconcilerError):
    """Another reconciler run holds the state lock."""

    exit_code = 3


class ApplyFailed(ReconcilerError):
    """A kernel operation failed mid-apply; the next apply converges."""


class VerificationFailed(ApplyFailed):
    """The host still differed from the desired state after an apply (someone may have changed it
    meanwhile)."""


class RolledBack(ApplyFailed):
    """An apply failed and was rolled back: the host is as it was before it."""


class Interrupted(ApplyFailed):
    """SIGINT or SIGTERM stopped an apply; not rolled back (--no-rollback, or a second signal)."""

    exit_code = 130


class InterruptedRolledBack(RolledBack):
    """SIGINT or SIGTERM stopped an apply, and it was rolled back: the host is as it was before it."""

    exit_code = 130


class RollbackFailed(ApplyFailed):
    """An apply failed and so did its rollback: the host is partly changed."""

    exit_code = 5


def message(e: ReconcilerError) -> str:
    """How the CLI reports an error on stderr: a spec's located problems one a line, else `error: ...`."""
    if isinstance(e, SpecError):
        return "\n".join(str(p) for p in e.problems)
    return f"error: {e}"
