from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from sandbox import Host, SandboxError, require_root

# Shown after a failing integration test, to tell a reconciler bug from a test bug without rerunning.
DIAGNOSTICS = (
    "ip -br link; ip -br addr; ip route; ip netns list",
    "for ns in $(ip netns list | cut -d' ' -f1); do echo \"== $ns\"; ip -n $ns -br addr; ip -n $ns route;"
    " done",
    "nft list ruleset",
    "sysctl net.ipv4.ip_forward; ls -la /var/lib/reconciler /etc/netns",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("reliability", "reliability suite sizes (tests/reliability)")
    group.addoption(
        "--runs", type=int, default=None, help="model-based sequences to run (default: the CI size)"
    )
    group.addoption(
        "--crash-stride",
        type=int,
        default=None,
        help="kill the apply at every N-th kernel operation (1: every one; default: the CI stride)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: runs the reconciler against the real kernel in a throwaway sandbox (root)"
    )
    config.addinivalue_line(
        "markers", "private_dirs(*dirs): more directories the `host` sandbox covers with a private tmpfs"
    )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[_failed] = report.failed
    return report


_failed = pytest.StashKey[bool]()


@pytest.fixture
def host(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Host]:
    """A fresh sandboxed host per test, always torn down."""
    require_root()
    marker = request.node.get_closest_marker("private_dirs")
    sandbox = Host(workdir=tmp_path, private_dirs=marker.args if marker else ())
    try:
        yield sandbox
        if request.node.stash.get(_failed, False):
            _dump(sandbox)
    finally:
        sandbox.close()


def _dump(sandbox: Host) -> None:
    for cmd in DIAGNOSTICS:
        try:
            proc = sandbox.run(cmd, check=False, timeout=20)
        except (SandboxError, OSError) as e:
            print(f"$ {cmd}\n(could not run: {e})")
            continue
        print(f"$ {cmd}\n{proc.stdout}{proc.stderr}")
