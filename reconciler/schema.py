"""`reconciler schema`: the spec's JSON Schema, generated from the pydantic models in spec.py.

Generated, never written by hand, so it follows the models. Editors (yaml-language-server) use it for
completion and shape checks; the semantic checks (overlaps, references, ...) stay with `validate`.
"""

from __future__ import annotations

import re
from typing import Any

from . import __version__
from .spec import NAME_RE, SCOPE_RE, Spec

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _ecma(pattern: re.Pattern[str]) -> str:
    # Python's \Z (end of string, no trailing newline) is ECMA-262's $ (without the multiline flag).
    return pattern.pattern.replace(r"\Z", "$")


def spec_schema() -> dict[str, Any]:
    schema = Spec.model_json_schema()
    names = {"pattern": _ecma(NAME_RE)}
    props = schema["properties"]
    for key in ("networks", "containers"):
        props[key]["propertyNames"] = names
    for branch in props["name"].get("anyOf", [props["name"]]):
        if branch.get("type") == "string":
            branch["pattern"] = _ecma(SCOPE_RE)
    return {
        "$schema": DIALECT,
        "title": f"netreconciler spec, version 1 (reconciler {__version__})",
        "description": "Networks and containers (network namespaces) the reconciler makes a host match.",
        **{k: v for k, v in schema.items() if k != "title"},
    }
