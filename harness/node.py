"""A real Kubernetes node beside the control plane: containerd, kubelet, kube-scheduler, kube-proxy.

The binaries come from ``make node-build`` (the same wrapper module as the control plane,
tools/kube) and Debian's containerd, runc and CNI plugins (``make node-deps``); the sandbox image
from ``make node-pause``. :class:`Node` starts, on the machine itself (root):

- containerd with a configuration and directories of its own (``RUN_DIR``; images are imported
  from docker-archives, never pulled), cgroupfs, a CNI configuration of its own: a bridge with
  host-local IPAM on a private range;
- the control plane (harness/kube.py) with the API server on the bridge's gateway address, where
  pods reach it through the ``kubernetes`` Service, on ``Node,RBAC`` with NodeRestriction;
- kube-scheduler, a kubelet with a node client certificate from the harness CA, and kube-proxy
  (iptables; NodePorts only on the bridge).

What it changes on the machine is recorded first and undone by ``stop`` (harness/node_machine.py),
which also reports anything left. ``python -m harness.node up`` (``make kube-up``) runs one for a
person; ``clean`` undoes a node a killed run left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.local.processes import free_port
from app.local.servers import LocalServer
from harness import node_machine as machine
from harness.kube import ROOT, ControlPlane, binary, run_until_stopped
from harness.node_machine import BRIDGE, GATEWAY, POD_CIDR, RUN_DIR

NODE_NAME = "coupon-node"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
PAUSE_ARCHIVE = ROOT / ".tools" / "node" / "images" / "pause-3.10.tar"
SOCKET = RUN_DIR / "containerd.sock"
CNI_DIR = RUN_DIR / "cni"


def containerd_config(metrics_port: int) -> str:
    """containerd 1.6's configuration: every directory ours, CRI set for this machine.

    ``restrict_oom_score_adj``: root may not lower an OOM score here, and without it every
    sandbox fails (runc: "can't get final child's PID from pipe: EOF").
    ``netns_mounts_under_state_dir`` and our own CNI directory: podman uses /run/netns and
    /etc/cni/net.d.
    """
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{RUN_DIR / "containerd" / "root"}"
state = "{RUN_DIR / "containerd" / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{SOCKET}"
[ttrpc]
  address = "{SOCKET}.ttrpc"
[metrics]
  address = "127.0.0.1:{metrics_port}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{RUN_DIR / "opt"}"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  enable_selinux = false
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{RUN_DIR / "runc"}"
  [{cri}.cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{CNI_DIR / "net.d"}"
    max_conf_num = 1
"""


def cni_config() -> dict[str, Any]:
    """Our bridge, host-local addresses from the private range, no masquerade."""
    return {
        "cniVersion": "0.4.0",
        "name": "coupon-node",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(CNI_DIR / "ipam"),
                },
            }
        ],
    }


@dataclass
class Containerd(LocalServer):
    """Debian's containerd on our socket; its TCP metrics port tells when it serves."""

    name: str = "containerd"

    def _command(self) -> Sequence[str]:
        assert self.directory is not None
        config = self.directory / "containerd.toml"
        config.write_text(containerd_config(self.port))
        return ["containerd", "--config", str(config)]

    def _ready(self) -> bool:
        return SOCKET.exists()

    def ctr(self, *args: str, timeout: float = 600) -> str:
        cmd = ["ctr", "--address", str(SOCKET), "-n", "k8s.io", *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} -> {done.returncode}: {done.stderr[-2000:]}")
        return done.stdout

    def import_archive(self, archive: Path) -> None:
        """Import a docker-archive (images are never pulled: no registry is reachable)."""
        self.ctr("images", "import", str(archive))

    def images(self) -> set[str]:
        return set(self.ctr("images", "ls", "-q").split())


@dataclass
class KubeComponent(LocalServer):
    """A node component from .tools/kube/bin, its configuration files in its directory."""

    kubeconfig: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)

    def _command(self) -> Sequence[str]:
        assert self.directory is not None
        command = [binary(self.name), *self.flags]
        if self.config:
            path = self.directory / f"{self.name}.json"
            path.write_text(json.dumps(self.config, indent=2))
            command.append(f"--config={path}")
        return command


def corefile(kubeconfig: Path, health_port: int, ready_port: int) -> str:
    """cluster.local from the API server, on the gateway; no `forward` (none is compiled in):
    a name outside the cluster is answered SERVFAIL, never asked of another server."""
    return f""".:53 {{
    bind {GATEWAY}
    errors
    health 127.0.0.1:{health_port}
    ready 127.0.0.1:{ready_port}
    cache 5
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        ttl 5
    }}
}}
"""


# What CoreDNS's kubernetes plugin reads, granted to the user of its client certificate.
COREDNS_RBAC: list[dict[str, Any]] = [
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "coupon-node:coredns"},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["endpoints", "services", "pods", "namespaces"],
                "verbs": ["list", "watch"],
            },
            {
                "apiGroups": ["discovery.k8s.io"],
                "resources": ["endpointslices"],
                "verbs": ["list", "watch"],
            },
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "coupon-node:coredns"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "coupon-node:coredns",
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:coredns"}
        ],
    },
]


@dataclass
class CoreDns(LocalServer):
    """CoreDNS (tools/coredns) on the gateway's port 53; ``port`` is its ready endpoint."""

    name: str = "coredns"
    kubeconfig: Path | None = None

    def _command(self) -> Sequence[str]:
        assert self.directory is not None and self.kubeconfig is not None
        conf = self.directory / "Corefile"
        conf.write_text(corefile(self.kubeconfig, free_port(), self.port))
        return [binary("coredns"), "-conf", str(conf)]

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ready", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False


def kubelet_config(certs: Path, port: int, healthz_port: int) -> dict[str, Any]:
    """The KubeletConfiguration this machine needs: cgroupfs on cgroup v1, swap tolerated, no
    DNS (``resolvConf: ""``: pods resolve nothing outside), no image garbage collection (images
    are imported, never pulled back)."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": GATEWAY,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(certs / "kubelet.crt"),
        "tlsPrivateKeyFile": str(certs / "kubelet.key"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(certs / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{SOCKET}",
        "cgroupDriver": "cgroupfs",
        "failSwapOn": False,
        "failCgroupV1": False,
        "clusterDomain": "cluster.local",
        "clusterDNS": [GATEWAY],  # CoreDNS
        "resolvConf": "",  # pods with dnsPolicy Default get no server at all
        "podLogsDir": str(RUN_DIR / "pod-logs"),
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "maxPods": 60,
        "shutdownGracePeriod": "0s",
        "nodeStatusUpdateFrequency": "2s",
    }


def kube_proxy_config(kubeconfig: Path, healthz_port: int, metrics_port: int) -> dict[str, Any]:
    """iptables mode; NodePorts on the bridge only; conntrack sysctls left alone (zeros)."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "hostnameOverride": NODE_NAME,
        "bindAddress": GATEWAY,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "nodePortAddresses": [POD_CIDR],
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False, "minSyncPeriod": "0s"},
    }


@contextlib.contextmanager
def machine_lock(timeout: float = 600) -> Iterator[None]:
    """One node on the machine at a time (CI and people share it): wait for the other one."""
    machine.LOCK.parent.mkdir(parents=True, exist_ok=True)
    with machine.LOCK.open("w") as lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another node holds {machine.LOCK}") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class Node:
    """The control plane and one node on this machine; ``start``, ``stop`` (which undoes it)."""

    def __init__(self, directory: Path, archives: Sequence[Path] = ()) -> None:
        self.directory = directory
        self.archives = [PAUSE_ARCHIVE, *archives]
        self.plane = ControlPlane(directory / "plane", address=GATEWAY)
        self.containerd = Containerd(directory=directory / "containerd")
        self.coredns = CoreDns(directory=directory / "coredns")
        self.scheduler = KubeComponent(name="kube-scheduler", directory=directory / "scheduler")
        self.kubelet = KubeComponent(name="kubelet", directory=directory / "kubelet")
        self.kube_proxy = KubeComponent(name="kube-proxy", directory=directory / "kube-proxy")
        self.before: machine.Before | None = None
        self.leftovers: list[str] = []
        self.cleaned_at_start: list[str] = []
        self.timings: dict[str, float] = {}
        self._lock: contextlib.ExitStack | None = None

    @property
    def servers(self) -> tuple[LocalServer, ...]:
        return (self.containerd, self.coredns, self.scheduler, self.kubelet, self.kube_proxy)

    def start(self, timeout: float = 180) -> Node:
        """Everything up, and return once the Node is Ready."""
        missing = [a for a in self.archives if not a.exists()]
        if missing:
            raise RuntimeError(f"{missing} missing: run `make node-pause` / `make node-load`")
        self._lock = contextlib.ExitStack()
        self._lock.enter_context(machine_lock())
        started = time.monotonic()
        try:
            self.cleaned_at_start = machine.clean()
            self.before = machine.record()
            machine.set_up_network(self.before)
            (CNI_DIR / "net.d").mkdir(parents=True, exist_ok=True)
            (CNI_DIR / "net.d" / "10-coupon-node.conflist").write_text(json.dumps(cni_config()))
            self.containerd.start(timeout)
            for archive in self.archives:
                self.containerd.import_archive(archive)
            self.timings["containerd"] = time.monotonic() - started
            self.plane.start(timeout)
            self.timings["control plane"] = time.monotonic() - started
            self._start_node_components(timeout)
            self.timings["kubelet started"] = time.monotonic() - started
            self.wait_ready(timeout)
            self.timings["node Ready"] = time.monotonic() - started
        except BaseException:
            self.stop()
            raise
        return self

    def _issue(self, name: str, subject: str, usage: str, sans: str = "") -> Path:
        self.plane.certs.issue(name, subject, usage, sans)
        config = self.directory / f"{name}.kubeconfig"
        config.write_text(self.plane.client_kubeconfig(name))
        return config

    def _start_node_components(self, timeout: float) -> None:
        certs = self.plane.certs.directory
        scheduler = self._issue("kube-scheduler", "/CN=system:kube-scheduler", "clientAuth")
        node = self._issue("node", f"/O=system:nodes/CN=system:node:{NODE_NAME}", "clientAuth")
        proxy = self._issue("kube-proxy", "/CN=system:kube-proxy", "clientAuth")
        self.plane.certs.issue(
            "kubelet", f"/CN={NODE_NAME}", "serverAuth", f"DNS:{NODE_NAME},IP:{GATEWAY}"
        )
        self.scheduler.flags = [
            *(f"--kubeconfig={scheduler}", f"--authentication-kubeconfig={scheduler}"),
            *(f"--authorization-kubeconfig={scheduler}", "--leader-elect=false"),
            *("--bind-address=127.0.0.1", f"--secure-port={self.scheduler.port}"),
        ]
        self.scheduler.start(timeout)
        with self.plane.client() as api:
            for obj in COREDNS_RBAC:
                kind = "clusterroles" if obj["kind"] == "ClusterRole" else "clusterrolebindings"
                api.post(f"/apis/rbac.authorization.k8s.io/v1/{kind}", json=obj).raise_for_status()
        coredns = self._issue("coredns", "/CN=system:coredns", "clientAuth")
        self.coredns.kubeconfig = coredns
        self.coredns.start(timeout)
        kubelet_port = self.kubelet.port
        self.kubelet.port = free_port()
        self.kubelet.config = kubelet_config(certs, kubelet_port, self.kubelet.port)
        self.kubelet.flags = [
            f"--kubeconfig={node}",
            f"--root-dir={RUN_DIR / 'kubelet'}",
            f"--cert-dir={RUN_DIR / 'kubelet' / 'pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={GATEWAY}",
            "--v=1",
        ]
        self.kubelet.start(timeout)
        metrics = free_port()
        self.kube_proxy.config = kube_proxy_config(proxy, self.kube_proxy.port, metrics)
        self.kube_proxy.flags = ["--v=1"]
        self.kube_proxy.start(timeout)

    def node(self) -> dict[str, Any] | None:
        with self.plane.client() as api:
            answer = api.get(f"/api/v1/nodes/{NODE_NAME}")
        return answer.json() if answer.status_code == 200 else None

    def ready(self) -> bool:
        node = self.node() or {}
        conditions = node.get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if (dead := self.describe_exit()) is not None:
                raise RuntimeError(dead)
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {NODE_NAME} not Ready after {timeout}s: {self.node()}")
            time.sleep(0.2)

    def describe_exit(self) -> str | None:
        """None while every process runs; else the first one found gone, with its log."""
        found = (s.describe_exit() for s in (*self.servers, *self.plane.servers))
        return next((what for what in found if what is not None), None)

    def stop(self) -> None:
        """Stop everything and undo every change to the machine; ``leftovers`` says what stayed."""
        try:
            for server in reversed(self.servers):
                server.stop()
            self.plane.stop()
            machine.clean()
            if self.before is not None:
                self.leftovers = machine.leftovers(self.before)
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    def kubectl_env(self) -> dict[str, str]:
        return dict(os.environ, KUBECONFIG=str(self.plane.kubeconfig))


def load(archives: Sequence[Path]) -> int:
    """``make node-load``: into a running node's containerd now; a node started later imports
    every archive it is given (the tests pass theirs)."""
    if not SOCKET.exists():
        print(f"no node running; archives ready: {', '.join(map(str, archives))}")
        return 0
    containerd = Containerd()
    for archive in archives:
        containerd.import_archive(archive)
    print(f"imported into the running node: {sorted(containerd.images())}")
    return 0


def up(archives: Sequence[Path]) -> int:
    """``make kube-up``: the control plane and a node in .tools/kube/up until Ctrl-C."""
    import shutil

    directory = ROOT / ".tools" / "kube" / "up"
    shutil.rmtree(directory, ignore_errors=True)
    node = Node(directory, archives).start()
    print(f"node Ready: {json.dumps({k: round(v, 1) for k, v in node.timings.items()})}")
    print(f"export KUBECONFIG={node.plane.kubeconfig}")
    print(f"(pods on {POD_CIDR}, bridge {BRIDGE}; logs in {directory}; Ctrl-C stops and cleans up)")
    try:
        return run_until_stopped(node)
    finally:
        print(f"stopped; left on the machine: {node.leftovers or 'nothing'}", file=sys.stderr)


def main(argv: Sequence[str]) -> int:
    command, *rest = argv or ["up"]
    archives = [Path(a) for a in rest]
    if command == "up":
        return up([a for a in archives if a != PAUSE_ARCHIVE])
    if command == "load":
        return load(archives)
    if command == "clean":
        with machine_lock(timeout=5):
            found = machine.clean()
        print("\n".join(found) if found else "nothing of a node was left on this machine")
        return 0
    print("usage: python -m harness.node up|load ARCHIVE...|clean", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
