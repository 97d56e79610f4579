#!/usr/bin/env bash
# Installs what netreconciler needs on a fresh Debian machine, as root: Debian's nftables (for
# libnftables), iproute2, podman for its integration test, and a venv at .venv with the package and its
# test extras (pytest, ruff, mypy, jsonschema, ansible-core, molecule). Idempotent.
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

# podman, runc and a static busybox (the offline image) for the podman integration test. Without
# recommends: the test needs none of buildah, slirp4netns, fuse-overlayfs, ...
containers=()
command -v podman >/dev/null || containers+=(podman netavark)
command -v runc >/dev/null || containers+=(runc)
{ ldd /bin/busybox 2>&1 || true; } | grep -q 'not a dynamic executable' || containers+=(busybox-static)
if ((${#containers[@]})); then
  echo "== installing Debian packages for the podman test: ${containers[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${containers[@]}" >/dev/null
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
