"""Real traffic through what converge built: a "db" server in namespace db, a "web" server in web that
asks db by name for every request, and a client on the host connecting to the published port 8000.

The servers are left running, as a real workload would be, and their pids written to SERVERS: destroy
must remove the network under them without waiting for them to go (destroy.yml checks they live on)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

SERVERS = Path("/etc/netreconciler/verify-servers.pids")
# Runs inside a namespace: answers every connection with one line.
DB = """
import socket
srv = socket.create_server(("0.0.0.0", 6379))
print("listening", flush=True)
while True:
    conn, _ = srv.accept()
    with conn:
        conn.sendall(b"+PONG from db\\n")
"""
# Runs inside web: on every connection, asks "db" (resolved through web's hosts file) and relays it.
WEB = """
import socket
srv = socket.create_server(("0.0.0.0", 5000))
print("listening", flush=True)
while True:
    conn, _ = srv.accept()
    with conn, socket.create_connection(("db", 6379), timeout=5) as db:
        conn.sendall(b"web reached " + db.getpeername()[0].encode() + b": " + db.recv(100))
"""


def start(netns: str, code: str) -> int:
    """A server left running in `netns`, detached from this script's output (which Ansible reads to
    its end), in a session of its own."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "listening":
        raise SystemExit(f"the server in {netns} did not start")
    proc.stdout.close()
    return proc.pid


def ask(host: str, port: int) -> str:
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection((host, port), timeout=5) as s:
                return s.recv(200).decode().strip()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main() -> None:
    SERVERS.write_text("".join(f"{pid}\n" for pid in (start("db", DB), start("web", WEB))))
    db_ip = subprocess.run(
        ["ip", "netns", "exec", "web", "getent", "hosts", "db"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[0]
    answer = ask("127.0.0.1", 8000)
    print(f"127.0.0.1:8000 -> {answer}")
    expected = f"web reached {db_ip}: +PONG from db"
    if answer != expected:
        raise SystemExit(f"expected {expected!r}, got {answer!r}")


if __name__ == "__main__":
    main()
