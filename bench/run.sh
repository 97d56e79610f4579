#!/usr/bin/env bash
# The benchmark, as root: `bash bench/run.sh [--sizes 100,500,1000] [--reps 3] [--peers ours,floor,...]`.
# Installs what it needs when missing (the venv, Debian's containernetworking-plugins); every scenario
# runs inside a throwaway sandbox (tests/sandbox.py), never on this machine's own network.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
if [ ! -x /usr/lib/cni/bridge ] || [ ! -x /usr/lib/cni/portmap ] || ! command -v iptables >/dev/null; then
  echo "== installing Debian packages: containernetworking-plugins iptables"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containernetworking-plugins iptables >/dev/null
fi
# Byte-compile the package, as pip does on a regular install: the editable install has no .pyc, and
# under PYTHONDONTWRITEBYTECODE (set in some CI and agent environments) every CLI run would otherwise
# recompile its ~40 modules, about 0.1 s of CPU per run that an installed reconciler never pays.
.venv/bin/python -m compileall -q reconciler
exec .venv/bin/python -m bench "$@"
