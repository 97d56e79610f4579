"""Entering etcd mode from the CLI: the daemon's store, and `reconciler apply`'s one reconcile."""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..drivers.overlay.clusteripam import Allocation
from ..spec import Spec
from ..statedir import StateDir
from .mode import EtcdMode, default_advertise

if TYPE_CHECKING:
    from ..watch.daemon import Options


def public_key(spec: Spec, key_file: str) -> str | None:
    """This host's WireGuard public key, registered in the store, when the spec encrypts an overlay (the
    key file is read then only; its private half never leaves it)."""
    from ..drivers.overlay import wgkeys, wireguard

    return wgkeys.public_key_of(key_file) if wireguard.encrypted_networks(spec) else None


def etcd_mode(spec: Spec, opts: Options, log: Callable[[str], None]) -> EtcdMode:
    from .. import engine
    from ..watch.status import folder

    assert spec.cluster is not None
    advertise = opts.advertise or default_advertise(spec.cluster)
    host = opts.host or socket.gethostname()
    key = public_key(spec, opts.key_file)
    scope = engine.scope_of(spec)
    return EtcdMode(spec.cluster, scope, host, advertise, log, folder(opts.state_dir.path), key)


def against_store(args: argparse.Namespace, spec: Spec, state_dir: StateDir) -> tuple[Spec, Allocation, str]:
    """`apply` in etcd mode: one reconcile against the store (the cluster spec, its allocation and
    this host's name in it). Nothing keeps this host's lease alive
    afterwards, so what it registered expires after the TTL: said on stderr, every time."""
    from pathlib import Path

    from .. import engine

    assert spec.cluster is not None
    advertise = args.advertise or default_advertise(spec.cluster)
    host = args.host or socket.gethostname()
    scope = engine.scope_of(spec)

    def log(text: str) -> None:
        print(text, file=sys.stderr)

    mode = EtcdMode(spec.cluster, scope, host, advertise, log, public_key=public_key(spec, args.key_file))
    cluster, alloc = mode.resolve(spec, state_dir.load(scope), Path(args.spec), claim=not args.dry_run)
    if not args.dry_run:
        print(
            f"warning: etcd mode: host {host}'s registration and endpoints expire {spec.cluster.ttl} s "
            "after this apply (nothing keeps its lease alive), and other hosts then drop them: run "
            f"`reconciler watch {args.spec} --host {host}` to keep them",
            file=sys.stderr,
        )
    return cluster, alloc, host
