"""What the CLI loads to start: pydantic without its plugin loader (importlib.metadata, email), and
`--version` without pydantic at all. Start-up time itself is measured by bench/, not here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def loaded_after(*cli_args: str) -> set[str]:
    """The module names loaded by a fresh interpreter after `reconciler CLI_ARGS`."""
    code = (
        "import sys\n"
        "from reconciler.cli import main\n"
        "try:\n"
        f"    main({list(cli_args)!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(' '.join(sys.modules), file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True, timeout=60
    )
    return set(proc.stderr.split())


def test_validate_skips_pydantic_plugin_loader() -> None:
    loaded = loaded_after("validate", "specs/pets-bridge.yaml")
    assert "pydantic.main" in loaded  # the spec was really validated by pydantic
    assert "importlib.metadata" not in loaded
    assert "email" not in loaded


def test_validate_still_reports_invalid_specs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", "tests/specs_invalid/bad_spec_name.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("tests/specs_invalid/bad_spec_name.yaml:2: name: invalid spec name")


def test_version_loads_no_pydantic() -> None:
    loaded = loaded_after("--version")
    assert "reconciler.cli" in loaded
    # The CLI's own stand-in for pydantic's plugin loader is in sys.modules; pydantic itself is not.
    assert "pydantic" not in loaded
    assert "pydantic_core" not in loaded
