"""`reconciler completion`: the generated bash function completes commands, options, values, specs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from reconciler.cli import _parser
from reconciler.completion import script

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")


def complete(words: list[str], cwd: Path) -> list[str]:
    """What bash offers for the last word of `words`, as the shell's completion machinery would ask."""
    line = " ".join(f"'{w}'" for w in words)
    probe = f"""{script(_parser(), "bash")}
COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}
_reconciler
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True, cwd=cwd)
    return sorted(out.stdout.split())


@pytest.fixture
def specdir(tmp_path: Path) -> Path:
    for name in ("pets.yaml", "other.yml", "notes.txt"):
        (tmp_path / name).write_text("")
    (tmp_path / "specs").mkdir()
    return tmp_path


def test_commands(specdir: Path) -> None:
    offered = complete(["reconciler", ""], specdir)
    assert {"apply", "destroy", "validate", "show", "graph", "schema", "completion"} <= set(offered)
    assert complete(["reconciler", "ap"], specdir) == ["apply"]


def test_options_of_a_command(specdir: Path) -> None:
    assert complete(["reconciler", "apply", "--d"], specdir) == ["--dry-run"]
    assert complete(["reconciler", "graph", "--"], specdir) == ["--format", "--help"]


def test_option_values(specdir: Path) -> None:
    assert complete(["reconciler", "apply", "-o", ""], specdir) == ["json", "text"]
    assert complete(["reconciler", "graph", "x.yaml", "--format", "d"], specdir) == ["dot"]
    assert complete(["reconciler", "apply", "--state-dir", ""], specdir) == ["specs"]
    assert complete(["reconciler", "completion", ""], specdir) == ["bash", "zsh"]


def test_spec_files_only(specdir: Path) -> None:
    assert complete(["reconciler", "apply", ""], specdir) == ["other.yml", "pets.yaml", "specs"]
    assert complete(["reconciler", "validate", "p"], specdir) == ["pets.yaml"]
    assert complete(["reconciler", "schema", ""], specdir) == []


def test_zsh_script_loads_the_bash_function_through_bashcompinit() -> None:
    text = script(_parser(), "zsh")
    assert text.startswith("#compdef reconciler\nautoload -U +X bashcompinit && bashcompinit\n")
    assert script(_parser(), "bash") in text


def test_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", "-c", script(_parser(), "bash")], check=True)
