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

# This round's peers and helpers: wireguard-go and wg (encrypted overlay), etcd (the cluster store's tests),
# dnsperf, aardvark-dns and dnsmasq (the DNS benchmark's peers), tcpdump (captures on the sandboxed
# switch), iperf3 (overlay throughput). Installing etcd-server or dnsmasq must not start their services on
# this machine: a policy-rc.d refuses every start while they install.
tools=()
for pair in wireguard-go:wireguard-go wg:wireguard-tools etcd:etcd-server etcdctl:etcd-client \
            dnsperf:dnsperf dnsmasq:dnsmasq-base tcpdump:tcpdump iperf3:iperf3; do
  command -v "${pair%%:*}" >/dev/null || tools+=("${pair#*:}")
done
[ -x /usr/lib/podman/aardvark-dns ] || tools+=(aardvark-dns)
if ((${#tools[@]})); then
  echo "== installing Debian packages: ${tools[*]}"
  policy=/usr/sbin/policy-rc.d
  restore=""
  [ -e "$policy" ] && restore=$(mktemp) && cp -p "$policy" "$restore"
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${tools[@]}" >/dev/null
  if [ -n "$restore" ]; then mv "$restore" "$policy"; else rm -f "$policy"; fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  python3 -m venv .venv
fi
# Editable, as a plain path in a .pth file (setuptools' compat mode) rather than setuptools' default
# import hook: `site` runs that hook's module at every interpreter start, and its imports (pathlib,
# re, urllib) cost a thin `reconciler apply` (client.py) a third of its start. A venv installed with
# the hook is installed again.
if ! .venv/bin/python -c "import reconciler, nftables, pyroute2, pytest" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ] \
   || compgen -G '.venv/lib/python3*/site-packages/__editable___netreconciler_*_finder.py' >/dev/null; then
  echo "== installing netreconciler and its test extras into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]' --config-settings editable_mode=compat
  touch .venv/.installed
fi
