"""`reconciler lock SPEC [--check]`: the lock file beside the spec, as CI and users see it (no root)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from reconciler.cli import main

SPEC = {
    "version": 1,
    "hosts": {"host-a": {"address": "192.0.2.11"}, "host-b": {"address": "192.0.2.12"}},
    "networks": {"pets": {"driver": "overlay", "subnet": "10.200.0.0/24"}},
    "containers": {
        "db": {"host": "host-b", "networks": ["pets"]},
        "web": {"host": "host-a", "networks": ["pets"]},
    },
}


def write(path: Path, data: dict[str, object]) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_lock_check_relock(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "pets.yaml"
    write(spec, SPEC)
    assert main(["lock", str(spec), "--check"]) == 1
    assert "pets.yaml.lock is stale" in capsys.readouterr().err
    assert not (tmp_path / "pets.yaml.lock").exists()

    assert main(["lock", str(spec)]) == 0
    first = json.loads((tmp_path / "pets.yaml.lock").read_text())
    assert set(first["networks"]["pets"]["containers"]) == {"db", "web"}
    assert main(["lock", str(spec), "--check"]) == 0
    assert main(["lock", str(spec)]) == 0
    assert "up to date" in capsys.readouterr().out

    grown = {**SPEC, "containers": {**SPEC["containers"], "cache": {"host": "host-a", "networks": ["pets"]}}}
    write(spec, grown)
    assert main(["lock", str(spec), "--check"]) == 1
    assert "container cache: unlocked ->" in capsys.readouterr().err
    assert main(["lock", str(spec)]) == 0
    second = json.loads((tmp_path / "pets.yaml.lock").read_text())["networks"]["pets"]["containers"]
    assert {k: second[k] for k in ("db", "web")} == first["networks"]["pets"]["containers"]


def test_nothing_to_lock_without_overlays(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "bridge.yaml"
    write(spec, {"version": 1, "networks": {"b": {}}, "containers": {"c": {"networks": ["b"]}}})
    assert main(["lock", str(spec), "--check"]) == 0
    assert main(["lock", str(spec)]) == 0
    assert "nothing to lock" in capsys.readouterr().out
    assert not (tmp_path / "bridge.yaml.lock").exists()


def test_invalid_spec_and_malformed_lock_are_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "pets.yaml"
    write(spec, SPEC)
    (tmp_path / "pets.yaml.lock").write_text("{not json")
    assert main(["lock", str(spec), "--check"]) == 1
    assert "pets.yaml.lock is unreadable" in capsys.readouterr().err
    write(spec, {**SPEC, "containers": {"db": {"host": "host-z", "networks": ["pets"]}}})
    assert main(["lock", str(spec)]) == 1
    assert "containers.db.host: unknown host 'host-z'" in capsys.readouterr().err


def test_lock_of_a_yml_spec_and_of_a_directory_holding_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "pets.yml"
    write(spec, SPEC)
    assert main(["lock", str(spec)]) == 0
    assert (tmp_path / "pets.yml.lock").is_file()
    assert main(["lock", str(spec), "--check"]) == 0
    # The directory reads pets.yml and, as the spec's lock, every *.lock beside it.
    assert main(["lock", str(tmp_path), "--check"]) == 1
    assert main(["lock", str(tmp_path)]) == 0
    assert main(["lock", str(tmp_path), "--check"]) == 0
    locked = json.loads((tmp_path / "spec.lock").read_text())["networks"]["pets"]["containers"]
    assert locked == json.loads((tmp_path / "pets.yml.lock").read_text())["networks"]["pets"]["containers"]
    capsys.readouterr()
