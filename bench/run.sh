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
exec .venv/bin/python -m bench "$@"
