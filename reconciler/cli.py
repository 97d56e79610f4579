"""`reconciler`: the command line. Errors become messages and exit codes at its edge (guard.py),
and only there.

Exit codes: 0 success (or in sync); 1 invalid spec, refused or failed apply; 2 changes pending
(with --exit-code); 3 another run holds the lock; 4 missing privileges; 5 failed apply whose rollback
failed too (an interrupted one too); 130 interrupted by SIGINT or SIGTERM (rolled back, or not with
--no-rollback or a second signal).
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from typing import TYPE_CHECKING, TypeVar

from . import __version__
from .drivers.overlay.wgkeys import DEFAULT_KEY_FILE
from .errors import ReconcilerError, SpecError
from .guard import guarded

if TYPE_CHECKING:
    import signal
    from collections.abc import Callable

    from . import engine, speccache
    from .drivers.overlay import clusteripam
    from .nft import Nft
    from .observe import Observed
    from .spec import Spec
    from .statedir import StateDir
    from .watch.daemon import Options

T = TypeVar("T")

EXIT_PENDING = 2


def _without_pydantic_plugins() -> None:
    """pydantic looks for plugins (entry points of every installed distribution) when it builds the
    first model, and importing its loader alone pulls in importlib.metadata and email: a tenth of
    `reconciler validate`. The CLI uses no pydantic plugins, so it gives pydantic a loader that has
    none, as PYDANTIC_DISABLE_PLUGINS=__all__ would, without that import."""
    name = "pydantic.plugin._loader"
    if name not in sys.modules:
        loader = types.ModuleType(name)
        loader.get_plugins = tuple  # type: ignore[attr-defined]
        sys.modules[name] = loader


_without_pydantic_plugins()

EXAMPLES = """\
examples:
  reconciler validate specs/pets-bridge.yaml
  reconciler apply specs/pets-bridge.yaml --dry-run     # show the plan, change nothing
  reconciler apply specs/pets-bridge.yaml               # converge the host to the spec
  reconciler apply specs/pets-bridge.yaml --dry-run --exit-code   # drift check: exit 2 if out of sync
  reconciler show specs/pets-bridge.yaml -o json
  reconciler destroy specs/pets-bridge.yaml
  reconciler watch specs/ --log-format json         # follow a directory of specs, repair drift
  reconciler watch --git https://git.example/net.git --path hosts/a --interval 30s   # GitOps
  reconciler status                                     # the daemon's applied and attempted revisions
  reconciler sync                                       # fetch and reconcile now, wait for the result
  reconciler suspend / reconciler resume                # hold new revisions (drift repair goes on)
  reconciler explain specs/pets-bridge.yaml web db 6379/tcp   # allowed? by which policy?
  reconciler graph specs/pets-bridge.yaml --format dot | dot -Tsvg > pets.svg
  reconciler schema > spec.schema.json                  # for editors (yaml-language-server)
  source <(reconciler completion bash)
  reconciler lock specs/pets-overlay.yaml               # pin overlay addresses in pets-overlay.yaml.lock
  reconciler lock specs/pets-overlay.yaml --check       # CI: fail when the lock is missing or stale
  reconciler apply specs/pets-overlay.yaml --host host-a   # this machine's part of a cluster spec

exit codes: 0 ok, 1 invalid spec or failed apply, 2 changes pending (--exit-code),
            3 another run holds the lock, 4 needs root or CAP_NET_ADMIN,
            5 failed apply whose rollback failed too (the host is partly changed),
            130 interrupted (Ctrl-C or SIGTERM: the action in flight finishes, then the apply is
                rolled back, or stops with --no-rollback; a second interrupt stops at once)
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="reconciler",
        description="Declarative container networking: make this host's bridges, namespaces, veths and "
        "nftables match a YAML spec, changing only what differs.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"reconciler {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, *examples: str) -> argparse.ArgumentParser:
        cp = sub.add_parser(
            name,
            help=help,
            description=help,
            epilog="examples:\n" + "\n".join(f"  {e}" for e in examples),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        return cp

    def state_dir(cp: argparse.ArgumentParser) -> None:
        cp.add_argument(
            "--state-dir",
            metavar="DIR",
            help="where IPAM records and the lock live "
            "(default: $RECONCILER_STATE_DIR or /var/lib/reconciler)",
        )

    def no_rollback(cp: argparse.ArgumentParser) -> None:
        cp.add_argument(
            "--no-rollback",
            action="store_true",
            help="when an action or the verification after it fails, leave the host as it is instead of "
            "restoring the state observed before the apply",
        )

    def output(cp: argparse.ArgumentParser) -> None:
        cp.add_argument("-o", "--output", choices=["text", "json"], default="text", help="output format")

    def host(cp: argparse.ArgumentParser) -> None:
        cp.add_argument(
            "--host",
            metavar="NAME",
            help="which of the spec's hosts this machine is (default: the one with a local address)",
        )

    def key_file(cp: argparse.ArgumentParser) -> None:
        cp.add_argument(
            "--key-file",
            metavar="PATH",
            default=DEFAULT_KEY_FILE,
            help=f"this host's WireGuard private key, for encrypted overlays (default {DEFAULT_KEY_FILE})",
        )

    def advertise(cp: argparse.ArgumentParser) -> None:
        cp.add_argument(
            "--advertise",
            metavar="ADDRESS",
            help="etcd mode: this host's underlay address, its VTEP (default: the source address of "
            "the route towards the first etcd endpoint)",
        )

    def quiet(cp: argparse.ArgumentParser) -> None:
        cp.add_argument(
            "-q", "--quiet", action="store_true", help="no progress display (it is off anyway when not a TTY)"
        )

    v = command(
        "validate",
        "check a spec without touching the host",
        "reconciler validate spec.yaml",
        'for f in specs/*.yaml; do reconciler validate "$f" || exit 1; done',
    )
    v.add_argument(
        "spec", metavar="SPEC", help="YAML spec file, or a directory of *.yaml/*.yml files forming one spec"
    )

    a = command(
        "apply",
        "plan and apply the changes that make the host match SPEC",
        "reconciler apply spec.yaml --dry-run                # show the plan, change nothing",
        "reconciler apply spec.yaml                          # converge",
        "reconciler apply spec.yaml --dry-run --exit-code    # drift check: exit 2 if out of sync",
        "reconciler apply spec.yaml -o json -q               # for scripts and Ansible",
    )
    a.add_argument(
        "spec", metavar="SPEC", help="YAML spec file, or a directory of *.yaml/*.yml files forming one spec"
    )
    a.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    a.add_argument(
        "--exit-code", action="store_true", help="exit 2 when the plan is not empty, 0 when in sync"
    )
    a.add_argument(
        "--local",
        action="store_true",
        help="apply in this process even when a `reconciler watch` runs on the state directory "
        "(by default the daemon is handed the spec: it plans against the state it holds in memory)",
    )
    host(a)
    key_file(a)
    advertise(a)
    no_rollback(a)
    output(a)
    quiet(a)
    state_dir(a)

    kg = command(
        "keygen",
        "create this host's WireGuard private key if it has none (mode 0600) and print its public key, "
        "the host's public_key in a spec with encrypted overlays",
        "reconciler keygen                                   # " + DEFAULT_KEY_FILE,
        "reconciler keygen --key-file /etc/netreconciler/b.key",
    )
    key_file(kg)

    lk = command(
        "lock",
        "pin every overlay address in SPEC.lock (keeps locked ones, allocates new ones, drops removed ones)",
        "reconciler lock spec.yaml && git add spec.yaml spec.yaml.lock",
    )
    lk.add_argument("spec", metavar="SPEC", help="YAML spec file")
    lk.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 when the lock is missing or stale"
    )

    d = command(
        "destroy",
        "remove every object SPEC's scope owns, and nothing else",
        "reconciler destroy spec.yaml --dry-run   # what would go",
        "reconciler destroy spec.yaml",
    )
    d.add_argument("spec", metavar="SPEC", help="YAML spec file (only its `name:` scope is used)")
    d.add_argument("--dry-run", action="store_true", help="print what would be removed and change nothing")
    no_rollback(d)
    output(d)
    quiet(d)
    state_dir(d)

    s = command(
        "show",
        "show the managed state observed on this host: every scope, or SPEC's",
        "reconciler show                              # every scope on this host",
        "reconciler show spec.yaml",
        "reconciler show spec.yaml -o json | jq .containers",
    )
    s.add_argument(
        "spec", metavar="SPEC", nargs="?", help="YAML spec file: show its scope (every scope otherwise)"
    )
    output(s)
    state_dir(s)

    w = command(
        "watch",
        "keep the host matching PATH (or a git remote's branch): apply spec edits or commits as they land "
        "and repair drift",
        "reconciler watch /etc/netreconciler/ --metrics-address 127.0.0.1:9411",
        "reconciler watch specs/pets-overlay.yaml --host host-a   # re-reads SPEC.lock when it changes",
        "reconciler watch --git https://git.example/net.git --branch main --path hosts/a --interval 30s",
        "reconciler watch --git ssh://git@git.example/net.git --verify-signatures /etc/netreconciler/signers",
    )
    w.add_argument(
        "path",
        metavar="PATH",
        nargs="?",
        help="a spec file, or a directory whose *.yaml and *.yml files form one spec (not with --git)",
    )
    w.add_argument(
        "--git",
        metavar="URL",
        help="follow this git remote instead of PATH: a clone in the state directory, fetched every "
        "--interval, each new commit applied (verified, rolled back on failure)",
    )
    w.add_argument("--branch", default="main", metavar="BRANCH", help="the branch to follow (default main)")
    w.add_argument(
        "--path",
        dest="git_path",
        default=".",
        metavar="DIR",
        help="the spec's directory (or file) inside the repository (default: its root)",
    )
    w.add_argument(
        "--interval",
        type=_duration,
        default=30.0,
        metavar="DURATION",
        help="fetch the remote this often: 30s, 5m, 1h or seconds (default 30s)",
    )
    w.add_argument(
        "--verify-signatures",
        metavar="KEYS",
        help="apply only commits signed by one of these keys: an SSH allowed-signers file, or a file of "
        "armored OpenPGP public keys (git verify-commit)",
    )
    w.add_argument(
        "--resync-interval",
        type=_positive_seconds,
        default=60.0,
        metavar="SECONDS",
        help="full observe and repair at least this often (default 60)",
    )
    w.add_argument("--log-format", choices=["text", "json"], default="text", help="log lines as text or JSON")
    w.add_argument(
        "--metrics-address", type=_address, metavar="HOST:PORT", help="serve /metrics and /healthz here"
    )
    host(w)
    key_file(w)
    advertise(w)
    state_dir(w)

    st = command(
        "status",
        "what the daemon on this state directory applied: per scope the applied and the attempted "
        "revision and its error, the last sync and drift repair, suspension, whether it runs",
        "reconciler status",
        "reconciler status -o json | jq '.scopes[].applied_revision'",
    )
    output(st)
    state_dir(st)
    sy = command(
        "sync",
        "make the daemon fetch and reconcile now (SIGHUP), and wait for the result",
        "reconciler sync",
        "reconciler sync --timeout 120",
    )
    sy.add_argument(
        "--timeout", type=_positive_seconds, default=60.0, metavar="SECONDS", help="wait at most this long"
    )
    state_dir(sy)
    su = command(
        "suspend",
        "stop applying new revisions and spec edits (drift repair goes on, unless --all)",
        "reconciler suspend",
        "reconciler suspend --all     # no reconcile at all, drift included",
    )
    su.add_argument("--all", action="store_true", help="stop drift repair too")
    state_dir(su)
    rs = command("resume", "apply new revisions again, and reconcile now", "reconciler resume")
    state_dir(rs)

    ex = command(
        "explain",
        "say whether SRC may open a connection to DST on PORT/PROTO, and which policy or isolation rule "
        "decides, from the spec alone (exit 0 allowed, 1 denied, 2 bad input)",
        "reconciler explain spec.yaml web db 6379/tcp",
        "reconciler explain spec.yaml 198.51.100.7 front 80/tcp     # a client outside",
        "reconciler explain spec.yaml web api 8080/tcp -o json      # a service: each backend",
    )
    ex.add_argument("spec", metavar="SPEC", help="YAML spec file")
    ex.add_argument("src", metavar="SRC", help="a container of the spec, or an address (a client outside)")
    ex.add_argument("dst", metavar="DST", help="a container or a service of the spec")
    ex.add_argument("port", metavar="PORT/PROTO", help="the destination port, e.g. 6379/tcp")
    output(ex)

    g = command(
        "graph",
        "draw SPEC's topology: networks, containers, their addresses and published ports",
        "reconciler graph spec.yaml                       # Mermaid: paste into a ```mermaid block",
        "reconciler graph spec.yaml --format dot | dot -Tpng > topology.png",
    )
    g.add_argument("spec", metavar="SPEC", help="YAML spec file")
    g.add_argument("--format", choices=["mermaid", "dot"], default="mermaid", help="output syntax")

    command(
        "schema",
        "print the spec's JSON Schema (for editors: yaml-language-server, VS Code, ...)",
        "reconciler schema > spec.schema.json",
        "then start a spec with: # yaml-language-server: $schema=./spec.schema.json",
    )

    c = command(
        "completion",
        "print a shell completion script",
        "source <(reconciler completion bash)            # now, in this shell",
        "reconciler completion bash > /etc/bash_completion.d/reconciler",
        'reconciler completion zsh > "${fpath[1]}/_reconciler"',
    )
    c.add_argument("shell", choices=["bash", "zsh"], help="the shell to complete in")
    return p


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    scale = units.get(text[-1:], 1) if text else 1
    return _positive_seconds(text[:-1] if text[-1:] in units else text) * scale


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> int:
    """The command line after entry.py: every command but an apply the daemon took."""
    args = _parser().parse_args(argv)
    return guarded(lambda: _run(args))


def _load(path: str) -> Spec:
    """A spec file, or a directory whose *.yaml and *.yml files form one spec (as `watch` reads it)."""
    from pathlib import Path

    from .watch.sources import load_specs

    return load_specs(Path(path))


def _run(args: argparse.Namespace) -> int:
    if args.command == "validate":
        spec = _load(args.spec)
        print(f"{args.spec}: valid ({len(spec.networks)} networks, {len(spec.containers)} containers)")
        return 0
    if args.command in ("graph", "schema", "completion"):
        print(_offline(args))
        return 0
    if args.command == "explain":
        return _explain(args)
    if args.command == "lock":
        return _lock(args.spec, check=args.check)
    if args.command == "keygen":
        from .drivers.overlay.wgkeys import keygen

        public, created = keygen(args.key_file)
        print(public)
        if created:
            print(f"created {args.key_file}", file=sys.stderr)
        return 0
    if args.command == "apply" and not args.local:
        from .client import hand_over

        code = hand_over(args)
        if code is not None:
            return code
    from . import engine

    if args.command in ("status", "sync", "suspend", "resume"):
        # They read the state directory and signal the daemon: no network privileges needed.
        from .watch.control import control

        return control(args, engine.state_dir_from(args.state_dir).path)

    engine.require_privileges()  # before reading anything: the user learns what is missing first
    state_dir = engine.state_dir_from(args.state_dir)
    if args.command == "watch":
        from .watch.daemon import run

        return run(_watch_options(args, state_dir))
    if args.command == "show":
        from .show import show

        result = show(_load(args.spec) if args.spec else None, state_dir)
        print(json.dumps(result, indent=2) if args.output == "json" else _show_text(result))
        return 0
    if args.command == "apply":
        outcome = _apply(args, state_dir)
    else:
        spec = _load(args.spec)
        rollback = not args.no_rollback
        outcome = _reconcile(
            args,
            lambda: engine.reconcile(spec, state_dir, dry_run=args.dry_run, destroy=True, rollback=rollback),
        )
        if not args.dry_run:
            from . import speccache

            speccache.forget(state_dir, args.spec)
    _print_plan(outcome, args.output)
    if getattr(args, "exit_code", False) and outcome.actions:
        return EXIT_PENDING
    return 0


def _watch_options(args: argparse.Namespace, state_dir: StateDir) -> Options:
    from pathlib import Path

    from .watch.daemon import Options
    from .watch.gitremote import GitRemote

    if (args.path is None) == (args.git is None):
        raise ReconcilerError("watch: give PATH or --git URL (one of them)")
    git = None
    if args.git is not None:
        keys = Path(args.verify_signatures) if args.verify_signatures else None
        if keys is not None and not keys.is_file():
            raise ReconcilerError(f"--verify-signatures {keys}: no such file")
        git = GitRemote.in_state_dir(state_dir.path, args.git, args.branch, args.git_path, keys)
    elif args.verify_signatures:
        raise ReconcilerError("--verify-signatures needs --git")
    return Options(
        git.spec_path if git else Path(args.path),
        state_dir,
        resync_interval=args.resync_interval,
        log_format=args.log_format,
        metrics_address=args.metrics_address,
        host=args.host,
        key_file=args.key_file,
        advertise=args.advertise,
        git=git,
        fetch_interval=args.interval,
    )


def _apply(args: argparse.Namespace, state_dir: StateDir) -> engine.Outcome:
    """`apply` on this host: with the spec compiled by an earlier run when nothing it depends on
    changed since (speccache.py), else loaded and compiled, and then kept for the next run."""
    from . import engine, speccache

    options = speccache.Options(args.host, args.key_file, args.advertise)
    key = speccache.spec_key(args.spec, options)
    entry = speccache.load(state_dir, args.spec, key) if key else None
    rollback = not args.no_rollback
    if entry is not None:

        def recompile(observed: Observed, nft: Nft) -> engine.Outcome:
            spec = _load(args.spec)
            lock = _read_lock(args.spec, spec)
            outcome = engine.converge(
                spec,
                state_dir,
                observed,
                nft,
                dry_run=args.dry_run,
                host=args.host,
                lock=lock,
                rollback=rollback,
                key_file=args.key_file,
            )
            _keep(state_dir, args.spec, key, spec, lock, options, outcome)
            return outcome

        cached = _reconcile(
            args,
            lambda: speccache.apply(
                state_dir, entry, dry_run=args.dry_run, rollback=rollback, recompile=recompile
            ),
        )
        if cached is not None:
            return cached
    spec = _load(args.spec)
    stored = spec.cluster is not None
    lock = None if stored else _read_lock(args.spec, spec)
    if stored:
        from .store.oneshot import against_store

        spec, lock, args.host = against_store(args, spec, state_dir)

    def run() -> engine.Outcome:
        return engine.reconcile(
            spec,
            state_dir,
            dry_run=args.dry_run,
            host=args.host,
            lock=lock,
            rollback=rollback,
            key_file=args.key_file,
        )

    outcome = _reconcile(args, run)
    if not stored:
        _keep(state_dir, args.spec, key, spec, lock, options, outcome)
    return outcome


def _keep(
    state_dir: StateDir,
    path: str,
    key: str | None,
    spec: Spec,
    lock: clusteripam.Allocation | None,
    options: speccache.Options,
    outcome: engine.Outcome,
) -> None:
    from . import speccache

    if key is not None and outcome.compiled is not None and speccache.cacheable(spec, lock, options):
        speccache.save(state_dir, path, speccache.entry_of(key, spec, lock, outcome.compiled))


def _reconcile(args: argparse.Namespace, run: Callable[[], T]) -> T:
    """`apply` or `destroy` (`run`), with SIGINT and SIGTERM handled as interrupt.py describes."""
    from . import interrupt, progress, term
    from .errors import Interrupted, InterruptedRolledBack

    bar = term.progress_bar(args.quiet)

    def announce(signum: signal.Signals, rolling_back: bool) -> None:
        if bar is not None:
            bar.done()
        then = "then stopping" if args.no_rollback else "then rolling back"
        doing = "finishing the rollback" if rolling_back else f"finishing the action in flight, {then}"
        print(f"{signum.name} received: {doing}; interrupt again to stop at once", file=sys.stderr)

    with progress.listening(bar), interrupt.handled(announce):
        try:
            outcome = run()
        except KeyboardInterrupt:
            if interrupt.received() is None:
                raise Interrupted("interrupted: nothing was changed") from None
            raise Interrupted(
                "interrupted again: stopped at once, not rolled back; the host is partly changed\n"
                + _next_step(args, finish=True)
            ) from None
        except (Interrupted, InterruptedRolledBack) as e:
            finish = not isinstance(e, InterruptedRolledBack)
            raise type(e)(f"{e}\n{_next_step(args, finish=finish)}") from e
        if (signum := interrupt.received()) is not None:
            print(f"{signum.name} came after the last change: the {args.command} completed", file=sys.stderr)
    return outcome


def _next_step(args: argparse.Namespace, *, finish: bool) -> str:
    again = f"reconciler {args.command} {args.spec}"
    if finish:
        return f"to finish the {args.command}: {again} (to see what remains: {again} --dry-run)"
    return f"to {args.command} again: {again}"


def _read_lock(path: str, spec: Spec) -> clusteripam.Allocation | None:
    from .drivers.overlay import clusteripam

    lock, warning = clusteripam.pinned(path, spec)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return lock


def _lock(path: str, *, check: bool) -> int:
    from .drivers.overlay import clusteripam
    from .drivers.overlay.clusterspec import overlay_networks

    spec = _load(path)
    if not overlay_networks(spec):
        print(f"{path}: no overlay networks, nothing to lock (bridge addresses are per host)")
        return 0
    lock_file = clusteripam.lock_path(path)
    lock = clusteripam.read_lock(lock_file)
    problems = clusteripam.staleness(spec, lock)
    if check:
        if problems:
            print(f"{lock_file} is stale: run `reconciler lock {path}` and commit it", file=sys.stderr)
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
            return 1
        print(f"{lock_file} is up to date")
        return 0
    if not problems:
        print(f"{lock_file} is up to date")
        return 0
    text = clusteripam.to_json(clusteripam.allocate(spec, lock))
    tmp = lock_file.with_name(lock_file.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(lock_file)
    print(f"wrote {lock_file}")
    for problem in problems:
        print(f"  {problem}")
    return 0


def _print_plan(outcome: engine.Outcome, fmt: str) -> None:
    from .render import plan_output
    from .term import colour_enabled

    sys.stdout.write(plan_output(outcome, fmt, colour_enabled(sys.stdout)))


def _show_text(result: dict[str, object]) -> str:
    from .show import text

    return text(result)


def _explain(args: argparse.Namespace) -> int:
    from .policy.explain import EXIT_ALLOWED, EXIT_BAD_INPUT, EXIT_DENIED, explain

    try:
        spec = _load(args.spec)
    except SpecError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return EXIT_BAD_INPUT
    result = explain(spec, args.src, args.dst, args.port)
    print(json.dumps(result.json(), indent=2) if args.output == "json" else result.text())
    return EXIT_ALLOWED if result.allowed else EXIT_DENIED


def _offline(args: argparse.Namespace) -> str:
    """The commands that only read the spec or the CLI itself: no privileges, no host state."""
    if args.command == "graph":
        from .graph import render

        return render(_load(args.spec), args.format)
    if args.command == "schema":
        from .schema import spec_schema

        return json.dumps(spec_schema(), indent=2)
    from .completion import script

    return script(_parser(), args.shell)
