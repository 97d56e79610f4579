"""`watch.sources.load_specs`: a directory of spec files merged into one spec, problems in their files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.errors import SpecError
from reconciler.watch.sources import Parses, load_specs, spec_files

NETWORKS = "version: 1\nnetworks:\n  front:\n    subnet: 10.1.0.0/24\n"
APP = "version: 1\ncontainers:\n  web:\n    networks: [front]\n"


def problems(path: Path) -> list[str]:
    with pytest.raises(SpecError) as e:
        load_specs(path)
    return [str(p) for p in e.value.problems]


def test_files_merge_into_one_spec(tmp_path: Path) -> None:
    (tmp_path / "a-networks.yaml").write_text(NETWORKS)
    (tmp_path / "b-app.yaml").write_text(APP)
    (tmp_path / ".b-app.yaml.swp").write_text("not yaml: [")  # an editor's temporary: not a spec
    (tmp_path / "notes.txt").write_text("not a spec")
    spec = load_specs(tmp_path)
    assert list(spec.networks) == ["front"] and list(spec.containers) == ["web"]
    assert spec.containers["web"].attachments().keys() == {"front"}


def test_a_single_file_is_read_as_apply_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(NETWORKS + "containers:\n  web: {networks: [front]}\n")
    assert list(load_specs(path).containers) == ["web"]


def test_problems_name_the_file_that_has_them(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(NETWORKS)
    (tmp_path / "b.yaml").write_text(APP.replace("[front]", "[back]"))
    (tmp_path / "c.yaml").write_text("version: 1\nnetworks:\n  other:\n    subnet: 10.1.0.128/25\n")
    assert sorted(problems(tmp_path)) == [
        f"{tmp_path / 'b.yaml'}:4: containers.web.networks.back: unknown network 'back'",
        f"{tmp_path / 'c.yaml'}:4: networks.other.subnet: "
        "subnet 10.1.0.128/25 overlaps 10.1.0.0/24 of network front",
    ]


def test_shape_problems_name_their_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(NETWORKS)
    (tmp_path / "b.yaml").write_text(APP + "    netns: relative\n")
    (tmp_path / "c.yaml").write_text("version: 1\ncontainers: [web]\n")
    assert sorted(problems(tmp_path)) == [
        f"{tmp_path / 'c.yaml'}:2: containers: must be a mapping",
    ]
    (tmp_path / "c.yaml").unlink()
    assert problems(tmp_path) == [
        f"{tmp_path / 'b.yaml'}:5: containers.web.netns: "
        "netns must be an absolute path to a network namespace, got 'relative'"
    ]


def test_every_broken_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("version: 1\nnetworks: {front: {subnet: 10.1.0.0/24}\n")
    (tmp_path / "b.yaml").write_text("")
    found = problems(tmp_path)
    assert [p.split(":")[0] for p in found] == [str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")], found
    assert found[1] == f"{tmp_path / 'b.yaml'}:1: the spec is empty"


def test_conflicting_definitions_name_both_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(NETWORKS + "containers:\n  web: {networks: [front]}\n")
    (tmp_path / "b.yaml").write_text(APP + "networks:\n  front: {subnet: 10.1.0.0/24}\n")
    assert problems(tmp_path) == [
        f"{tmp_path / 'b.yaml'}:3: containers.web: is defined twice: also in {tmp_path / 'a.yaml'}:6",
        f"{tmp_path / 'b.yaml'}:6: networks.front: is defined twice: also in {tmp_path / 'a.yaml'}:3",
    ]


def test_a_conflict_does_not_hide_the_other_problems(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(NETWORKS + "containers:\n  web: {networks: [front]}\n")
    (tmp_path / "b.yml").write_text(APP + "  db:\n    networks: [nowhere]\n")
    assert problems(tmp_path) == [
        f"{tmp_path / 'b.yml'}:3: containers.web: is defined twice: also in {tmp_path / 'a.yaml'}:6",
        f"{tmp_path / 'b.yml'}:6: containers.db.networks.nowhere: unknown network 'nowhere'",
    ]


def test_files_must_name_the_same_spec(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: pets\n" + NETWORKS)
    (tmp_path / "b.yaml").write_text(APP)
    (tmp_path / "c.yaml").write_text("version: 2\nname: pets\n")
    assert problems(tmp_path) == [
        f"{tmp_path / 'c.yaml'}:1: version: 2 differs: also in {tmp_path / 'a.yaml'}:2",
        f"{tmp_path / 'b.yaml'}:1: name: no name here but 'pets' in {tmp_path / 'a.yaml'}: "
        "every file must name the same spec",
    ]


def test_an_empty_directory_is_an_error_not_an_empty_spec(tmp_path: Path) -> None:
    # An empty spec would mean "remove everything": a checkout in progress must not do that.
    assert problems(tmp_path) == [f"{tmp_path}: no *.yaml or *.yml spec files in this directory"]


def test_kept_parses_follow_the_files(tmp_path: Path) -> None:
    networks, app = tmp_path / "a.yaml", tmp_path / "b.yaml"
    networks.write_text(NETWORKS)
    app.write_text(APP)
    parses = Parses()
    web = load_specs(tmp_path, parses).containers["web"]
    tmp = tmp_path / ".b.yaml.tmp"
    tmp.write_text(APP + "  db:\n    networks: [front]\n")
    tmp.replace(app)  # as git and editors write: a new file renamed over the old one
    spec = load_specs(tmp_path, parses)
    assert list(spec.containers) == ["web", "db"]
    assert spec.containers["web"] is web  # the unchanged container was not validated again
    assert spec == load_specs(tmp_path)  # what a fresh parse gives
    app.unlink()
    assert load_specs(tmp_path, parses).containers == {}


def test_kept_parses_report_what_a_fresh_parse_reports(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(NETWORKS + "containers:\n  web:\n    networks: [front]\n")
    parses = Parses()
    load_specs(spec, parses)
    spec.write_text(NETWORKS + "containers:\n  web:\n    networks: [front]\n  db:\n    networks: [back]\n")
    with pytest.raises(SpecError) as kept:
        load_specs(spec, parses)
    with pytest.raises(SpecError) as fresh:
        load_specs(spec)
    assert [str(p) for p in kept.value.problems] == [str(p) for p in fresh.value.problems]
    assert "spec.yaml:9: containers.db.networks.back" in str(kept.value.problems[0])


def test_yml_files_are_read_too(tmp_path: Path) -> None:
    (tmp_path / "networks.yaml").write_text(NETWORKS)
    (tmp_path / "apps.yml").write_text(APP)
    (tmp_path / ".apps.yml.swp").write_text("not yaml: [")
    (tmp_path / "apps.yml.lock").write_text("{}")  # a lock is read as a lock, not as a spec
    assert [f.name for f in spec_files(tmp_path)] == ["apps.yml", "networks.yaml"]
    assert list(load_specs(tmp_path).containers) == ["web"]


def test_a_name_in_a_yaml_and_a_yml_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "apps.yaml").write_text(NETWORKS + "containers:\n  web: {networks: [front]}\n")
    (tmp_path / "apps.yml").write_text(APP)
    assert problems(tmp_path) == [
        f"{tmp_path / 'apps.yml'}:3: containers.web: is defined twice: also in {tmp_path / 'apps.yaml'}:6"
    ]


def test_cli_validate_reads_a_directory_of_yaml_and_yml(tmp_path: Path) -> None:
    def validate() -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "reconciler", "validate", str(tmp_path)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)

    (tmp_path / "networks.yaml").write_text(NETWORKS)
    (tmp_path / "apps.yml").write_text(APP)
    done = validate()
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{tmp_path}: valid (1 networks, 1 containers)\n"
    (tmp_path / "more.yml").write_text(APP)
    done = validate()
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr == (
        f"{tmp_path / 'more.yml'}:3: containers.web: is defined twice: also in {tmp_path / 'apps.yml'}:3\n"
    )
