"""The `reconciler` command's entry (entry.py): the apply arguments it reads without argparse
(client.apply_options) are exactly what cli.py's parser reads, and whatever it does not recognise
is left to that parser; the defaults it copies to stay import-free match their sources."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import client, guard, statedir
from reconciler.cli import _parser
from reconciler.drivers.overlay import wgkeys

# An apply's arguments: options with their values (also as `--option=value`), one or two spec names
# (one of them a command's name), and among them what the entry must leave to argparse: abbreviations,
# --local, --help, values that look like options or are not one of -o's choices.
VALUES = ["text", "json", "text", "json", "yaml", "", "-x", "a.yaml", "apply", "host-a", "10.0.0.1"]
OPTION = st.one_of(
    st.sampled_from(sorted(client.FLAGS)).map(lambda f: [f]),
    st.tuples(st.sampled_from(sorted(client.VALUES)), st.sampled_from(VALUES)).map(list),
    st.tuples(st.sampled_from(sorted(client.VALUES)), st.sampled_from(VALUES)).map(lambda t: ["=".join(t)]),
)
ODD = st.sampled_from(["--local", "-h", "--help", "--dry", "--out", "--", "-qo", "--dry-run=x", "-o=json"])
SPECS = st.lists(st.sampled_from(["spec.yaml", "apply", "specs/"]), min_size=1, max_size=2)


@st.composite
def apply_argv(draw: st.DrawFn) -> list[str]:
    parts: list[list[str]] = draw(st.lists(OPTION, max_size=5))
    parts += [[spec] for spec in draw(SPECS)]
    if draw(st.integers(0, 5)) == 0:
        parts.append([draw(ODD)])
    order = draw(st.permutations(parts))
    return ["apply", *(token for part in order for token in part)]


def argparse_reads(argv: list[str]) -> argparse.Namespace | None:
    """cli.py's parser on argv; None when it refuses it (or prints help)."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            return _parser().parse_args(argv)
        except SystemExit:
            return None


@settings(max_examples=800, deadline=None)
@given(apply_argv())
def test_recognised_apply_arguments_are_read_as_argparse_reads_them(argv: list[str]) -> None:
    fast = client.apply_options(argv)
    if fast is None:
        return  # left to argparse, whatever it makes of them
    parsed = argparse_reads(argv)
    assert parsed is not None, argv
    assert not parsed.local
    expected = {k: v for k, v in vars(parsed).items() if k not in ("command", "local")}
    assert vars(fast) == expected, argv


@pytest.mark.parametrize(
    "argv",
    [
        ["apply", "spec.yaml"],
        ["apply", "spec.yaml", "--dry-run", "--exit-code", "-o", "json", "-q"],
        ["apply", "--output=json", "spec.yaml", "--state-dir", "/tmp/s", "--no-rollback"],
        ["apply", "specs/", "--host", "a", "--key-file=/k", "--advertise", "10.0.0.1", "--quiet"],
    ],
)
def test_plain_applies_are_recognised(argv: list[str]) -> None:
    fast = client.apply_options(argv)
    assert fast is not None
    assert vars(fast) == {
        k: v for k, v in vars(_parser().parse_args(argv)).items() if k not in ("command", "local")
    }


@pytest.mark.parametrize(
    "argv",
    [
        ["apply", "spec.yaml", "--local"],  # never handed over
        ["apply", "spec.yaml", "--help"],
        ["apply", "spec.yaml", "--dry"],  # an abbreviation: argparse resolves it
        ["apply", "spec.yaml", "-o", "yaml"],  # argparse's error message
        ["apply", "spec.yaml", "-o"],
        ["apply", "a.yaml", "b.yaml"],
        ["apply"],
        ["apply", "spec.yaml", "--", "x"],
        ["validate", "spec.yaml"],
        ["--version"],
        [],
    ],
)
def test_everything_else_is_left_to_argparse(argv: list[str]) -> None:
    assert client.apply_options(argv) is None


def test_the_copied_defaults_match_their_modules() -> None:
    assert client.DEFAULT_KEY_FILE == wgkeys.DEFAULT_KEY_FILE
    assert client.DEFAULT_STATE_DIR == statedir.DEFAULT_STATE_DIR
    assert client.OUTPUTS == ("text", "json")


def test_errors_are_reported_as_the_cli_reports_them(capsys: pytest.CaptureFixture[str]) -> None:
    from reconciler.errors import LockBusy

    def busy() -> int:
        raise LockBusy("the daemon at /x did not start this apply")

    assert guard.guarded(busy) == 3
    assert capsys.readouterr().err == "error: the daemon at /x did not start this apply\n"

    def broken() -> int:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError):  # not ours: a traceback, as from the CLI
        guard.guarded(broken)
