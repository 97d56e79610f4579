#!/usr/bin/env bash
# Installs what netreconciler needs on a fresh Debian machine, as root: Debian's nftables (for
# libnftables), iproute2, and a venv at .venv with the package and its test extras. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
{ command -v nft >/dev/null && ldconfig -p | grep -q 'libnftables\.so\.1'; } || missing+=(nftables)
command -v ip >/dev/null || missing+=(iproute2)
command -v unshare >/dev/null || missing+=(util-linux)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if ((${#missing[@]})); then
  echo "== installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import reconciler, nftables, pyroute2, pytest" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ]; then
  echo "== installing netreconciler and its test extras into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  touch .venv/.installed
fi
