"""The molecule scenario (molecule/default): create -> converge -> idempotence -> verify -> destroy,
run by `molecule test` inside a sandbox, so converge changes the sandbox's network, not this machine's."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
from sandbox import REPO, Host

pytestmark = [pytest.mark.integration, pytest.mark.private_dirs("/etc/netreconciler")]

BIN = Path(sys.executable).parent


def test_molecule_scenario(host: Host, tmp_path: Path) -> None:
    molecule = BIN / "molecule"
    if not molecule.exists():
        pytest.skip(f"molecule is not installed next to {sys.executable}: pip install -e '.[test]'")
    home = tmp_path / "home"
    remote_tmp = tmp_path / "ansible-tmp"
    for d in (home, remote_tmp):
        d.mkdir()
    env = {
        # molecule runs ansible-playbook, and the role runs `reconciler`, from this venv's bin.
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),  # molecule's cache and ansible's ~/.ansible stay in this test's tmp dir
        "ANSIBLE_REMOTE_TMP": str(remote_tmp),
        "ANSIBLE_LOCAL_TEMP": str(remote_tmp),
        "ANSIBLE_NOCOLOR": "1",
        "NO_COLOR": "1",
        "PY_COLORS": "0",
        "LC_ALL": "C.UTF-8",
        "PYTHONPATH": str(REPO),
    }
    proc = host.run(["sh", "-c", f'cd "{REPO}" && exec molecule test'], check=False, timeout=600, env=env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    for step in ("create", "converge", "idempotence", "verify", "destroy"):
        assert f"[default > {step}] Executed: Successful" in log, f"step {step} did not succeed:\n{log}"
    # One play recap per step, in order: converge changed the host, the second converge changed nothing.
    recaps = [
        (int(changed), int(failed))
        for changed, failed in re.findall(r"localhost\s+: ok=\d+\s+changed=(\d+).*?failed=(\d+)", log)
    ]
    assert len(recaps) == 5, log
    assert recaps[1][0] > 0 and recaps[2][0] == 0, recaps
    assert all(failed == 0 for _, failed in recaps), recaps
    assert "127.0.0.1:8000 -> web reached" in log, log
