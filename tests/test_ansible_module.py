"""The Ansible module's documentation parses, as ansible-doc reads it, and matches its argument spec."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
MODULE = REPO / "ansible_collections/netreconciler/net/plugins/modules/reconcile.py"
ANSIBLE_DOC = Path(sys.executable).parent / "ansible-doc"


def _module_namespace() -> dict[str, object]:
    namespace: dict[str, object] = {"__name__": "reconcile_under_test"}
    exec(compile(MODULE.read_text(), str(MODULE), "exec"), namespace)
    return namespace


def test_docs_are_yaml_and_match_the_argument_spec() -> None:
    ns = _module_namespace()
    docs = yaml.safe_load(str(ns["DOCUMENTATION"]))
    assert isinstance(yaml.safe_load(str(ns["EXAMPLES"])), list)
    assert set(yaml.safe_load(str(ns["RETURN"]))) == {"plan", "summary", "rendered", "applied", "problems"}
    spec = ns["ARGUMENT_SPEC"]
    assert isinstance(spec, dict)
    assert set(docs["options"]) == set(spec)
    for name, option in docs["options"].items():
        assert option["type"] == spec[name]["type"], name
        assert option.get("choices") == spec[name].get("choices"), name
        assert option.get("default") == spec[name].get("default"), name


def test_ansible_doc_reads_the_module(tmp_path: Path) -> None:
    if not ANSIBLE_DOC.exists():
        pytest.skip(f"ansible-core is not installed next to {sys.executable}: pip install -e '.[test]'")
    env = dict(
        os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO), HOME=str(tmp_path), ANSIBLE_LOCAL_TEMP=str(tmp_path)
    )
    proc = subprocess.run(
        [str(ANSIBLE_DOC), "--json", "netreconciler.net.reconcile"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)["netreconciler.net.reconcile"]["doc"]
    assert doc["short_description"].startswith("Make a host's container networking match")
