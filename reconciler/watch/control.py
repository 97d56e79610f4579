"""`reconciler status`, `sync`, `suspend` and `resume`: the operator's side of status.py."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ..dns import supervise
from ..errors import ReconcilerError
from . import status


def control(args: argparse.Namespace, state_dir: Path) -> int:
    if args.command == "status":
        report = current(state_dir)
        print(json.dumps(report, indent=2) if args.output == "json" else text(report))
        return 0
    if args.command in ("suspend", "resume"):
        level = ("all" if args.all else "revisions") if args.command == "suspend" else None
        status.set_suspended(state_dir, level)
        pid = status.poke(state_dir)
        said = f"suspended ({level})" if level else "resumed"
        print(
            f"{said}; "
            + (f"told the daemon (pid {pid})" if pid else "no daemon runs now: it reads this when it starts")
        )
        return 0
    since = time.time()
    if status.poke(state_dir) is None:
        raise ReconcilerError(f"no reconciler watch runs on {state_dir}")
    print(text(_with_running(status.wait_for_pass(state_dir, since, args.timeout), state_dir)))
    return 0


def current(state_dir: Path) -> dict[str, Any]:
    data = status.read_status(state_dir) or {"scopes": {}}
    # The file may predate a suspend or resume made while no daemon ran: the file of record wins.
    data["suspended"] = status.suspended(state_dir)
    return _with_running(data, state_dir)


def _with_running(data: dict[str, Any], state_dir: Path) -> dict[str, Any]:
    pid = status.running_pid(state_dir)
    data["running"] = pid is not None
    data["pid"] = pid
    data["resolver"] = supervise.status(state_dir)  # the daemon runs it; `show` tells it too
    return data


def text(report: dict[str, Any]) -> str:
    source = report.get("source") or {}
    where = (
        f"git {source['git']} branch {source['branch']} path {source['path']}"
        if "git" in source
        else source.get("path", "?")
    )
    lines = [
        f"daemon: {'running, pid ' + str(report['pid']) if report['running'] else 'not running'}"
        + (f" ({where})" if source else ""),
        f"suspended: {report['suspended'] or 'no'}",
        supervise.describe(report.get("resolver")),
    ]
    fetch = report.get("fetch")
    if fetch:
        state = f"failed: {fetch['error']}" if fetch.get("error") else "ok"
        lines.append(
            f"fetch: {state}; remote tip {fetch.get('revision') or '?'}, "
            f"last success {_when(fetch.get('last_success'))}"
        )
    for scope, entry in sorted(report.get("scopes", {}).items()):
        lines.append(f"scope {scope or '(none applied yet)'}:")
        lines.append(f"  applied revision:   {entry.get('applied_revision') or '-'}")
        lines.append(
            f"  attempted revision: {entry.get('attempted_revision') or '-'} ({entry.get('result')})"
        )
        if entry.get("error"):
            lines.extend(f"    {line}" for line in entry["error"].splitlines())
        last = entry.get("last_result") or "-"
        lines.append(
            f"  last reconcile:     {last}" + (f": {entry['last_error']}" if entry.get("last_error") else "")
        )
        lines.append(f"  last sync:          {_when(entry.get('last_sync'))}")
        lines.append(f"  last drift repair:  {_when(entry.get('last_drift_repair'))}")
    return "\n".join(lines)


def _when(at: float | None) -> str:
    if not at:
        return "never"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)) + f" ({time.time() - at:.0f} s ago)"
