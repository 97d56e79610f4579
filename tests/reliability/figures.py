"""Counters the reliability tests fill and conftest prints at the end of the run (and the README records)."""

from __future__ import annotations

from collections import Counter

FIGURES: Counter[str] = Counter()

# Printed in this order; a figure no test touched is left out.
LABELS = {
    "sequences": "model-based sequences run",
    "steps": "model-based steps applied (each: observed == desired, second plan empty)",
    "drifts": "drifts injected by hand and converged",
    "crashes": "crashes injected (SIGKILL after kernel operation N) and survived",
    "crashes_unmarked": "  of which left an unmarked link or namespace that the journal cleaned",
    "failures": "failures injected and rolled back to the exact previous state",
    "rollback_failures": "rollbacks failed on purpose and converged on the next apply",
    "hostile": "hostile inputs refused (exit 1, located message, no traceback, no kernel change)",
    "foreign": "foreign objects checked byte-identical",
    "foreign_checks": "foreign-state comparisons (after each apply and destroy)",
    "concurrent": "concurrent apply pairs serialized",
}
