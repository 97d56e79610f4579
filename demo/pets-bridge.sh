#!/usr/bin/env bash
# The "pets" app of Docker's networking post, built by the reconciler on this machine's real kernel:
#
#   docker network create -d bridge mybridge
#   docker run -d --net mybridge --name db redis
#   docker run -d --net mybridge -e DB=db -p 8000:5000 --name web chrch/web
#
# Everything runs inside a throwaway sandbox (new network, mount and pid namespaces, private tmpfs on
# /run/netns, /etc/netns and the state dir): this machine's own network is never touched, and all the
# sandbox made disappears when this script ends. Outside it, the script only installs what is missing
# (Debian's nftables, a venv at .venv). Run as root: sudo demo/pets-bridge.sh
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD

section() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
    echo "pets-bridge.sh: run as root (it creates namespaces, bridges and nft tables in a sandbox)" >&2
    exit 4
fi

section "Requirements"
bash scripts/bootstrap.sh
py=$root/.venv/bin/python
echo "nft: $(nft --version); python: $py"

scratch=$(mktemp -d /tmp/pets-demo.XXXXXX)
trap 'rmdir "$scratch" 2>/dev/null || true' EXIT

# Runs as pid 1 of the sandbox; its exit kills the servers and drops every namespace it made.
# shellcheck disable=SC2016
sandbox='
set -euo pipefail
root=$1 py=$2 scratch=$3
mount -t tmpfs -o mode=0755 demo "$scratch"
# A directory missing on this machine cannot be a mount point: cover its parent with an overlay whose
# upper layer is in the sandbox, so that creating it changes nothing outside.
private_dir() {
    local d=$1 p n
    if [ ! -d "$d" ]; then
        p=$(dirname "$d")
        while [ ! -d "$p" ]; do p=$(dirname "$p"); done
        n=$(printf %s "$p" | tr / _)
        mkdir -p "$scratch/overlay$n/upper" "$scratch/overlay$n/work"
        mount -t overlay overlay \
            -o "lowerdir=$p,upperdir=$scratch/overlay$n/upper,workdir=$scratch/overlay$n/work" "$p"
        mkdir -p "$d"
    fi
    mount -t tmpfs -o mode=0755 private "$d"
}
for d in /run/netns /etc/netns /var/lib/reconciler; do private_dir "$d"; done
umount -l /sys && mount -t sysfs sysfs /sys   # sysfs must show the sandbox interfaces, not the machine
ip link set lo up
state=$scratch/state
spec=$root/specs/pets-bridge.yaml
reconciler() { "$py" -m reconciler "$@"; }
section() { printf "\n\033[1m== %s\033[0m\n" "$*"; }
fail() { echo "FAILED: $*" >&2; exit 1; }

wait_listening() {
    for _ in $(seq 100); do
        grep -q listening "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    cat "$1" >&2
    fail "server did not start ($1)"
}

section "Plan: reconciler apply $spec --dry-run"
rc=0; reconciler apply "$spec" --dry-run --exit-code --state-dir "$state" || rc=$?
[ "$rc" = 2 ] || fail "a dry run on a fresh host should exit 2 (changes pending), got $rc"

section "Apply"
reconciler apply "$spec" --state-dir "$state"

section "Start a tiny \"redis\" in db (port 6379) and the web app in web (port 5000)"
ip netns exec db "$py" -u -c "
import socketserver
class Redis(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(b\"+PONG\r\n\" if line.strip().upper() == b\"PING\" else b\"-ERR\r\n\")
socketserver.ThreadingTCPServer.allow_reuse_address = True
server = socketserver.ThreadingTCPServer((\"0.0.0.0\", 6379), Redis)
print(\"listening\")
server.serve_forever()
" >"$scratch/db.log" 2>&1 &
# DB=db as in `docker run -e DB=db`: the app finds its database by name, through the hosts file.
DB=db ip netns exec web "$py" -u -c "
import http.server, os, socket
class Web(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with socket.create_connection((os.environ[\"DB\"], 6379), timeout=5) as db:
            db.sendall(b\"PING\r\n\")
            said = db.recv(100).decode().strip()
            body = f\"web reached db at {db.getpeername()[0]}: db said {said}\n\".encode()
        self.send_response(200)
        self.send_header(\"Content-Length\", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
server = http.server.ThreadingHTTPServer((\"0.0.0.0\", 5000), Web)
print(\"listening\")
server.serve_forever()
" >"$scratch/web.log" 2>&1 &
wait_listening "$scratch/db.log"
wait_listening "$scratch/web.log"
echo "db and web are listening"

section "Name resolution: ip netns exec web getent hosts db"
ip netns exec web getent hosts db || fail "db does not resolve in web"
db_ip=$(ip netns exec web getent hosts db | cut -d" " -f1)

section "HTTP to the published port: GET http://127.0.0.1:8000/ from the host"
answer=$("$py" -c "
import urllib.request
print(urllib.request.urlopen(\"http://127.0.0.1:8000/\", timeout=5).read().decode().strip())
") || fail "no answer on 127.0.0.1:8000"
echo "$answer"
[ "$answer" = "web reached db at $db_ip: db said +PONG" ] || fail "unexpected answer: $answer"

section "Second apply: nothing to do"
out=$(reconciler apply "$spec" --state-dir "$state")
echo "$out"
grep -q "No changes" <<<"$out" || fail "the second apply should report No changes"
rc=0; reconciler apply "$spec" --exit-code --state-dir "$state" >/dev/null || rc=$?
[ "$rc" = 0 ] || fail "apply --exit-code should exit 0 once in sync, got $rc"

section "All checks passed"
'

unshare --net --mount --pid --fork --kill-child --mount-proc --propagation private \
    bash -c "$sandbox" pets-demo "$root" "$py" "$scratch"
