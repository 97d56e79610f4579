"""`reconciler schema`: the JSON Schema accepts every example spec and refuses shape errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from reconciler.schema import spec_schema

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "specs").glob("*.yaml"))
INVALID = REPO / "tests" / "specs_invalid"
# Shape errors the schema can see (semantic ones, such as overlapping subnets, are `validate`'s job).
SHAPE_ERRORS = [
    "bad_spec_name",
    "container_name_dollar",
    "container_name_slash",
    "container_networks_wrong_shape",
    "driver_unknown",
    "internal_string",
    "missing_version",
    "mtu_too_small",
    "networks_not_mapping",
    "top_level_list",
    "unknown_container_key",
    "unknown_network_key",
    "unknown_top_level_key",
    "version_string",
    "wrong_version",
]


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = spec_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_spec_is_valid(validator: jsonschema.protocols.Validator, path: Path) -> None:
    errors = [e.message for e in validator.iter_errors(_yaml(path))]
    assert errors == []


def test_readme_spec_reference_is_valid(validator: jsonschema.protocols.Validator) -> None:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```yaml\n(version: 1\n.*?)```", readme, re.S)
    assert block is not None, "README's spec reference block is gone"
    errors = [e.message for e in validator.iter_errors(yaml.safe_load(block.group(1)))]
    assert errors == []


@pytest.mark.parametrize("name", SHAPE_ERRORS)
def test_shape_errors_are_refused(validator: jsonschema.protocols.Validator, name: str) -> None:
    assert list(validator.iter_errors(_yaml(INVALID / f"{name}.yaml"))), f"{name}.yaml passed the schema"


def test_port_given_as_number_is_refused(validator: jsonschema.protocols.Validator) -> None:
    spec = {"version": 1, "containers": {"web": {"ports": [8000]}}}
    assert [e.message for e in validator.iter_errors(spec)] == ["8000 is not of type 'string'"]


def test_cli_prints_the_generated_schema() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "reconciler", "schema"], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    printed = json.loads(out)
    assert printed == spec_schema()
    assert printed["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert {"version", "name", "networks", "containers"} <= set(printed["properties"])
