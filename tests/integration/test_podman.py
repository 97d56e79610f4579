"""Real podman containers on reconciler-managed networks (the README's podman recipe).

`web` is a podman container started in the namespace the reconciler made (`--network ns:/run/netns/web`);
`api` is a podman container that existed first (`--network none`) and whose namespace the spec adopts
(`netns: /proc/PID/ns/net`). Both answer by name from a third container, `client`, and resolve names
from inside through the embedded resolver (`--dns 127.0.0.11`). Both keep running when the spec
drops them and when the scope is destroyed: they lose our interfaces, nothing else.

podman runs entirely inside the sandbox: its storage and run state live on private tmpfs mounts
(/var/lib/containers, /run/containers), its cgroups under a cgroup2 mount of the sandbox's own /sys, and
its image is made offline with `podman import` of a rootfs holding only Debian's static busybox.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from sandbox import Host

pytestmark = [pytest.mark.integration, pytest.mark.private_dirs("/var/lib/containers", "/run/containers")]

BUSYBOX = "/bin/busybox"
IMAGE = "localhost/busybox-static:test"
# This machine's podman needs runc and explicit ulimits (its defaults exceed the allowed hard limits);
# cgroupfs and a file event log because there is no systemd inside the sandbox.
PODMAN = (
    "podman",
    "--runtime",
    "runc",
    "--cgroup-manager",
    "cgroupfs",
    "--events-backend",
    "file",
    "--tmpdir",
    "/run/containers/libpod",
)
RUN_OPTIONS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096", "--pids-limit", "-1")

SPEC = """\
version: 1
name: pods
networks:
  appnet: {subnet: 10.203.0.0/24}
containers:
  web:
    networks: [appnet]
    ports: ["8080:80"]
  api:
    networks: [appnet]
    netns: %s
  client:
    networks: [appnet]
"""


def _why_no_podman() -> str | None:
    missing = [tool for tool in ("podman", "runc") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (scripts/bootstrap.sh installs them with apt)"
    ldd = subprocess.run(["ldd", BUSYBOX], capture_output=True, text=True, check=False)
    if not Path(BUSYBOX).exists() or "not a dynamic executable" not in ldd.stdout + ldd.stderr:
        return f"{BUSYBOX} is missing or not static (Debian's busybox-static provides it)"
    return None


class Podman:
    """podman inside the sandbox; every container's cgroup under one parent, removed at the end."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.cgroup = f"/netreconciler-test-{uuid.uuid4().hex[:8]}"
        # The sandbox's /sys is its own sysfs: a cgroup2 mount there is seen by nobody else.
        host.run("mountpoint -q /sys/fs/cgroup || mount -t cgroup2 cgroup2 /sys/fs/cgroup")
        host.run(["mkdir", "-p", "/run/containers/libpod"])

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.host.run([*PODMAN, *args], check=check, timeout=120)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self("run", "--cgroup-parent", self.cgroup, *RUN_OPTIONS, *args, check=check)

    def import_busybox(self) -> None:
        rootfs = "/run/containers/rootfs"
        self.host.run(
            f"""set -e
            mkdir -p {rootfs}/bin {rootfs}/etc {rootfs}/tmp {rootfs}/www/web {rootfs}/www/api
            cp {BUSYBOX} {rootfs}/bin/busybox
            for app in $({BUSYBOX} --list); do [ "$app" = busybox ] || ln -s busybox {rootfs}/bin/$app; done
            echo "hello from web" > {rootfs}/www/web/index.html
            echo "hello from api" > {rootfs}/www/api/index.html
            tar -C {rootfs} -cf {rootfs}.tar .
            """
        )
        self("import", "--quiet", f"{rootfs}.tar", IMAGE)

    def close(self) -> None:
        self("rm", "--all", "--force", "--time", "0", check=False)
        path = shlex.quote(f"/sys/fs/cgroup{self.cgroup}")
        self.host.run(f"[ ! -d {path} ] || find {path} -depth -type d -exec rmdir {{}} +", check=False)


@pytest.fixture
def podman(host: Host) -> object:
    reason = _why_no_podman()
    if reason is not None:
        print(f"SKIPPED podman integration: {reason}")
        pytest.skip(reason)
    pm = Podman(host)
    try:
        yield pm
    finally:
        pm.close()


def _get(url: str) -> str:
    return f"GET {url} HTTP/1.0\r\n\r\n"


def test_podman_containers_on_reconciler_networks(host: Host, podman: Podman) -> None:
    podman.import_busybox()
    httpd = ("httpd", "-f", "-p")
    # An existing container with no network of its own: the spec adopts its namespace.
    podman.run("-d", "--name", "api", "--network", "none", IMAGE, *httpd, "8000", "-h", "/www/api")
    pid = podman("inspect", "--format", "{{.State.Pid}}", "api").stdout.strip()
    spec = host.write_spec(SPEC % f"/proc/{pid}/ns/net")
    applied = host.reconciler("apply", str(spec))
    assert applied.returncode == 0, applied.stderr

    # A container started in the namespace the reconciler made, its resolver the embedded one.
    dns = ("--dns", "127.0.0.11")
    podman.run(
        "-d", "--name", "web", "--network", "ns:/run/netns/web", *dns, IMAGE, *httpd, "80", "-h", "/www/web"
    )

    # Both are reachable by name from another container of the network.
    for name, port in (("web", 80), ("api", 8000)):
        conn = host.connect("client", name, port, timeout=5, payload=_get("/"))
        assert conn.ok, conn.error
        assert f"hello from {name}" in conn.data

    # From inside, with the container's own resolver code (busybox's nslookup speaks DNS itself, its
    # wget through the C library): web resolves api ...
    api = host.show(spec)["containers"]["api"]["interfaces"][0]["address"].split("/")[0]
    looked = podman.run("--rm", "--network", "ns:/run/netns/web", *dns, IMAGE, "nslookup", "api")
    assert f"Address: {api}" in looked.stdout, looked.stdout
    out = podman.run(
        "--rm", "--network", "ns:/run/netns/web", *dns, IMAGE, "wget", "-qO-", "http://api:8000/"
    )
    assert out.stdout.strip() == "hello from api"
    # ... and a process joining the adopted namespace resolves web the same way.
    api_ns = f"ns:/proc/{pid}/ns/net"
    out = podman.run("--rm", "--network", api_ns, *dns, IMAGE, "wget", "-qO-", "http://web/")
    assert out.stdout.strip() == "hello from web"

    # The published port answers on the host, through to the podman container.
    conn = host.connect(None, "127.0.0.1", 8080, timeout=5, payload=_get("/"))
    assert conn.ok and "hello from web" in conn.data, conn

    # Converged: the podman containers' processes changed nothing the reconciler manages.
    again = host.reconciler("apply", str(spec), "--dry-run", "--exit-code")
    assert again.returncode == 0, again.stdout + again.stderr


def _running(podman: Podman, name: str) -> bool:
    return podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip() == "true"


def _ns_links(podman: Podman, name: str) -> list[str]:
    """The interfaces in a podman container's network namespace, read through its pid."""
    pid = podman("inspect", "--format", "{{.State.Pid}}", name).stdout.strip()
    out = podman.host.run(["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-j", "link", "show"]).stdout
    return [link["ifname"] for link in json.loads(out)]


def test_podman_containers_outlive_their_removal_from_the_spec(host: Host, podman: Podman) -> None:
    """Podman keeps both containers running while the spec drops them and the scope is destroyed:
    only our interfaces, files and rules go, at once, and the containers stay up without them."""
    podman.import_busybox()
    httpd = ("httpd", "-f", "-p")
    podman.run("-d", "--name", "api", "--network", "none", IMAGE, *httpd, "8000", "-h", "/www/api")
    pid = podman("inspect", "--format", "{{.State.Pid}}", "api").stdout.strip()
    data = yaml.safe_load(SPEC % f"/proc/{pid}/ns/net")
    spec = host.write_spec(data)
    assert host.reconciler("apply", str(spec)).returncode == 0
    podman.run("-d", "--name", "web", "--network", "ns:/run/netns/web", IMAGE, *httpd, "80", "-h", "/www/web")
    for name, port in (("web", 80), ("api", 8000)):
        conn = host.connect("client", name, port, timeout=5, payload=_get("/"))
        assert conn.ok and f"hello from {name}" in conn.data, conn
    shown = host.show(spec)["containers"]
    web_veth, api_veth = (shown[c]["interfaces"][0]["host_ifname"] for c in ("web", "api"))

    # web leaves the spec: its namespace is held by podman's container, which keeps running.
    del data["containers"]["web"]
    out = host.reconciler("apply", str(host.write_spec(data)))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "note: container web: namespace still used by" in out.stdout, out.stdout
    assert _running(podman, "web") and _ns_links(podman, "web") == ["lo"]
    assert web_veth not in host.links() and "web" not in host.netns_list()
    assert host.run(["test", "-e", "/etc/netns/web"], check=False).returncode == 1
    assert not host.connect("client", "web", 80, timeout=1.5, payload=_get("/")).ok

    # api (adopted) leaves and comes back: the same namespace, wired again.
    api = data["containers"].pop("api")
    assert host.reconciler("apply", str(host.write_spec(data))).returncode == 0
    assert _running(podman, "api") and _ns_links(podman, "api") == ["lo"]
    assert api_veth not in host.links()
    data["containers"]["api"] = api
    assert host.reconciler("apply", str(host.write_spec(data))).returncode == 0
    conn = host.connect("client", "api", 8000, timeout=5, payload=_get("/"))
    assert conn.ok and "hello from api" in conn.data, conn
    again = host.reconciler("apply", str(spec), "--dry-run", "--exit-code")
    assert again.returncode == 0, again.stdout + again.stderr

    gone = host.reconciler("destroy", str(spec))
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert not [n for n in host.links() if n.startswith("nr")] and host.netns_list() == []
    assert not [t for t in host.nft_tables() if "netreconciler" in t]
    for name in ("web", "api"):
        assert _running(podman, name) and _ns_links(podman, name) == ["lo"], name
