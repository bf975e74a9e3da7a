"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

The binaries are built by ``make kube-build`` (tools/kube, the Go module proxy) into
``.tools/kube/bin``; this module only runs them. :class:`ControlPlane` generates its own
certificates with ``openssl`` (a CA, the API server's serving certificate, client certificates
for the admin and the controller-manager, the service-account signing key), starts the three
servers on free loopback ports in a directory of its own and writes an admin kubeconfig.

What it enables is what a cluster would: RBAC authorization, the PodSecurity admission plugin,
service-account tokens signed by the API server (the TokenRequest API), an audit log of every
request made by a service account outside kube-system (what a workload such as the operator did,
under its own identity), the controllers (Deployments get ReplicaSets and Pods, the garbage
collector cleans up, Jobs count their pods, HPAs scale), and the aggregation layer, through which
extension API servers (KEDA's metrics server, harness/keda.py) serve their groups. There is no
kubelet and no scheduler: Pods stay Pending, which is what the chart tests need; harness/node.py
adds a real node to one. ``python -m harness.kube`` (``KUBE_NODE=0 make kube-up``) runs one for a
person and prints its KUBECONFIG.
"""

from __future__ import annotations

import base64
import json
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from app.local.processes import free_port
from app.local.servers import LocalServer

ROOT = Path(__file__).resolve().parent.parent
KUBE_BIN = ROOT / ".tools" / "kube" / "bin"
ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CIDR = "10.96.0.0/24"  # ClusterIPs are allocated from it; nothing routes to them here

# Requests of service accounts outside kube-system (workloads under test), at Metadata level: who
# called which verb on what, and the answer's code. Controllers and people are not logged.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "None", "userGroups": ["system:serviceaccounts:kube-system"]},
        {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
        {"level": "None"},
    ],
}


def binary(name: str) -> str:
    path = KUBE_BIN / name
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: run `make kube-build` (Go, the module proxy)")
    return str(path)


def openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()[-1000:]}")


@dataclass(frozen=True)
class Certificates:
    """Files under ``directory``: ca, apiserver (serving), admin, controller-manager and
    kubelet-client (clients), sa (the service-account token signing key pair), and the
    aggregation layer's front-proxy-ca with its front-proxy-client (the API server's identity
    towards extension API servers, such as KEDA's metrics server). P-256 keys: fast to make.
    harness/node.py and harness/keda.py issue their own certificates with ``issue``."""

    directory: Path
    address: str = "127.0.0.1"  # the API server's address, in its certificate

    def path(self, name: str) -> Path:
        return self.directory / name

    def generate(self) -> Certificates:
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        self._authority("ca", "/CN=coupon-issuer-test-ca")
        # A CA of its own, as kubeadm does: a certificate from it may assert any user in headers
        # to an extension API server, so no ordinary client certificate may be one of them.
        self._authority("front-proxy-ca", "/CN=coupon-issuer-test-front-proxy-ca")
        sans = "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:127.0.0.1,IP:10.96.0.1"
        if self.address != "127.0.0.1":
            sans += f",IP:{self.address}"
        self.issue("apiserver", "/CN=kube-apiserver", "serverAuth", sans)
        self.issue("admin", "/O=system:masters/CN=coupon-issuer-admin", "clientAuth")
        self.issue("controller-manager", "/CN=system:kube-controller-manager", "clientAuth")
        # The API server's identity towards kubelets (logs, exec, port-forward).
        self.issue(
            "kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client", "clientAuth"
        )
        self.issue(
            "front-proxy-client", "/CN=front-proxy-client", "clientAuth", ca="front-proxy-ca"
        )
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sa.key", cwd=d)
        openssl("ec", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)
        return self

    def _authority(self, name: str, subject: str) -> None:
        ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
        openssl(
            *("req", "-x509", *ec, "-days", "30", "-keyout", f"{name}.key", "-out", f"{name}.crt"),
            *("-subj", subject),
            *("-addext", "basicConstraints=critical,CA:TRUE"),
            *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
            cwd=self.directory,
        )

    def tls(self, client: str | None = None) -> ssl.SSLContext:
        """TLS trusting the CA, presenting ``client``'s certificate when one is named."""
        context = ssl.create_default_context(cafile=str(self.path("ca.crt")))
        if client is not None:
            context.load_cert_chain(self.path(f"{client}.crt"), self.path(f"{client}.key"))
        return context

    def issue(self, name: str, subject: str, usage: str, sans: str = "", ca: str = "ca") -> None:
        """``name``.crt/.key signed by ``ca``, for ``usage`` (serverAuth, clientAuth or both,
        comma-separated)."""
        ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
        extra = ("-addext", f"subjectAltName={sans}") if sans else ()
        openssl(
            *("req", "-x509", *ec, "-days", "30", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key"),
            *("-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", subject),
            *("-addext", "basicConstraints=critical,CA:FALSE"),
            *("-addext", "keyUsage=critical,digitalSignature,keyEncipherment"),
            *("-addext", f"extendedKeyUsage={usage}", *extra),
            cwd=self.directory,
        )


def kubeconfig(
    server: str, ca: Path, user: dict[str, str], name: str = "coupon-issuer-test"
) -> str:
    """A kubeconfig (JSON, which kubectl and helm read as YAML) with everything embedded."""

    def embedded(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    auth = {
        key.replace("-file", "-data"): embedded(Path(value)) if key.endswith("-file") else value
        for key, value in user.items()
    }
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {"server": server, "certificate-authority-data": embedded(ca)},
            }
        ],
        "users": [{"name": name, "user": auth}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }
    return json.dumps(config, indent=2) + "\n"


@dataclass
class Etcd(LocalServer):
    name: str = "etcd"
    peer_port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _command(self) -> Sequence[str]:
        assert self.directory is not None
        peer = f"http://{self.host}:{self.peer_port}"
        return [
            binary("etcd"),
            *("--name", "default", "--data-dir", str(self.directory / "data")),
            *("--listen-client-urls", self.url, "--advertise-client-urls", self.url),
            *("--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer),
            *("--initial-cluster", f"default={peer}", "--log-level", "warn"),
            "--unsafe-no-fsync",  # a throw-away store: the tests need no durability from it
        ]


@dataclass
class ApiServer(LocalServer):
    name: str = "kube-apiserver"
    etcd_url: str = ""
    certs: Certificates | None = None
    address: str = "127.0.0.1"  # with a node: the bridge's gateway, which pods reach

    @property
    def host(self) -> str:
        return self.address

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def _command(self) -> Sequence[str]:
        assert self.directory is not None and self.certs is not None
        c = self.certs.path
        policy = self.directory / "audit-policy.json"
        policy.write_text(json.dumps(AUDIT_POLICY))
        return [
            binary("kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            *(f"--bind-address={self.host}", f"--advertise-address={self.host}"),
            f"--secure-port={self.port}",
            *(
                f"--tls-cert-file={c('apiserver.crt')}",
                f"--tls-private-key-file={c('apiserver.key')}",
            ),
            f"--client-ca-file={c('ca.crt')}",
            # Node: a kubelet may read and write only what its own pods need; NodeRestriction
            # keeps it to its own Node and pods (harness/node.py runs one).
            "--authorization-mode=Node,RBAC",
            # PodSecurity is on by default; named so it stays on.
            "--enable-admission-plugins=PodSecurity,NodeRestriction",
            f"--kubelet-client-certificate={c('kubelet-client.crt')}",
            f"--kubelet-client-key={c('kubelet-client.key')}",
            "--kubelet-preferred-address-types=InternalIP",
            f"--service-account-issuer={ISSUER}",
            f"--service-account-key-file={c('sa.pub')}",
            f"--service-account-signing-key-file={c('sa.key')}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # On loopback the "kubernetes" Service would point at 127.0.0.1, which Endpoints
            # refuse; with a node it points at the gateway, where pods reach the API server.
            f"--endpoint-reconciler-type={'none' if self.address == '127.0.0.1' else 'lease'}",
            # The aggregation layer (extension API servers such as KEDA's metrics server): the
            # API server proxies to them as front-proxy-client, naming the user in headers, and
            # dials the endpoint of their Service itself (it runs on the host, beside the node's
            # kube-proxy, not behind it).
            f"--requestheader-client-ca-file={c('front-proxy-ca.crt')}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={c('front-proxy-client.crt')}",
            f"--proxy-client-key-file={c('front-proxy-client.key')}",
            "--enable-aggregator-routing=true",
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}",
            f"--cert-dir={self.directory / 'serving'}",
            "--profiling=false",
        ]

    @property
    def audit_log(self) -> Path:
        assert self.directory is not None
        return self.directory / "audit.log"

    def _ready(self) -> bool:
        assert self.certs is not None
        try:
            answer = httpx.get(f"{self.url}/readyz", verify=self.certs.tls("admin"), timeout=2)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200


@dataclass
class ControllerManager(LocalServer):
    name: str = "kube-controller-manager"
    certs: Certificates | None = None
    kubeconfig_path: Path | None = None

    def _command(self) -> Sequence[str]:
        assert self.directory is not None and self.certs is not None
        c, config = self.certs.path, str(self.kubeconfig_path)
        return [
            binary("kube-controller-manager"),
            f"--kubeconfig={config}",
            f"--bind-address={self.host}",
            f"--secure-port={self.port}",
            f"--cert-dir={self.directory / 'serving'}",
            "--leader-elect=false",
            # Each controller under its own service account, as kubeadm runs it: the bootstrap
            # RBAC roles are written for that.
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={c('sa.key')}",
            f"--root-ca-file={c('ca.crt')}",
            f"--cluster-signing-cert-file={c('ca.crt')}",
            f"--cluster-signing-key-file={c('ca.key')}",
            # The HPA controller (KEDA's HPAs) every 5 s instead of 15 s: a decision follows the
            # metric within one short period, which the tests' timelines measure.
            "--horizontal-pod-autoscaler-sync-period=5s",
            "--profiling=false",
        ]


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager in ``directory``; ``start``, ``stop``."""

    def __init__(self, directory: Path, address: str = "127.0.0.1") -> None:
        self.directory = directory
        self.certs = Certificates(directory / "pki", address)
        self.etcd = Etcd(directory=directory / "etcd")
        self.apiserver = ApiServer(
            directory=directory / "apiserver", certs=self.certs, address=address
        )
        self.controller_manager = ControllerManager(
            directory=directory / "controller-manager", certs=self.certs
        )
        self.kubeconfig = directory / "admin.kubeconfig"

    @property
    def servers(self) -> tuple[LocalServer, ...]:
        return (self.etcd, self.apiserver, self.controller_manager)

    @property
    def url(self) -> str:
        return self.apiserver.url

    @property
    def ca(self) -> Path:
        return self.certs.path("ca.crt")

    @property
    def audit_log(self) -> Path:
        return self.apiserver.audit_log

    def start(self, timeout: float = 120) -> ControlPlane:
        """Start all three and return once the controllers act (the default ServiceAccount)."""
        self.certs.generate()
        self.etcd.start(timeout)
        self.apiserver.etcd_url = self.etcd.url
        try:
            self.apiserver.start(timeout)
            self.kubeconfig.write_text(self._kubeconfig("admin"))
            cm_config = self.directory / "controller-manager.kubeconfig"
            cm_config.write_text(self._kubeconfig("controller-manager"))
            self.controller_manager.kubeconfig_path = cm_config
            self.controller_manager.start(timeout)
            self._wait_for_controllers(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def client_kubeconfig(self, who: str) -> str:
        """A kubeconfig for the client certificate ``who`` (a node's components)."""
        return self._kubeconfig(who)

    def _kubeconfig(self, who: str) -> str:
        c = self.certs.path
        user = {
            "client-certificate-file": str(c(f"{who}.crt")),
            "client-key-file": str(c(f"{who}.key")),
        }
        return kubeconfig(self.url, self.ca, user)

    def _wait_for_controllers(self, timeout: float) -> None:
        """The serviceaccount controller creates ``default`` in every namespace: proof it runs."""
        deadline = time.monotonic() + timeout
        with self.client() as api:
            while api.get("/api/v1/namespaces/default/serviceaccounts/default").status_code != 200:
                if (dead := self.describe_exit()) is not None:
                    raise RuntimeError(dead)
                if time.monotonic() > deadline:
                    raise TimeoutError("the controller-manager made no default ServiceAccount")
                time.sleep(0.1)

    def client(self, token: str | None = None) -> httpx.Client:
        """An HTTP client of the API server: the admin's certificate, or a bearer ``token``."""
        if token is not None:
            headers = {"Authorization": f"Bearer {token}"}
            return httpx.Client(base_url=self.url, verify=self.certs.tls(), headers=headers)
        return httpx.Client(base_url=self.url, verify=self.certs.tls("admin"), timeout=30)

    def request_token(self, namespace: str, service_account: str, seconds: int = 3600) -> str:
        """A token for ``service_account`` from the TokenRequest API (what a kubelet mounts)."""
        body: dict[str, Any] = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": [ISSUER], "expirationSeconds": seconds},
        }
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token"
        with self.client() as api:
            answer = api.post(path, json=body)
        answer.raise_for_status()
        return str(answer.json()["status"]["token"])

    def token_kubeconfig(self, token: str, path: Path) -> Path:
        """A kubeconfig that authenticates with ``token`` only (for kubectl and helm)."""
        path.write_text(kubeconfig(self.url, self.ca, {"token": token}))
        return path

    def describe_exit(self) -> str | None:
        """None while all three run; else the first one found gone, with its log's last lines."""
        return next((what for s in self.servers if (what := s.describe_exit()) is not None), None)

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()


class Running(Protocol):
    """Servers started for a person: tell when one exits, stop them all."""

    def describe_exit(self) -> str | None: ...

    def stop(self) -> None: ...


def run_until_stopped(running: Running) -> int:
    """Until Ctrl-C or SIGTERM (0) or until one of its processes exits (1, its log's last lines
    printed); then stop everything."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while (dead := running.describe_exit()) is None:
            time.sleep(1)
        print(dead, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        running.stop()


def main() -> int:
    """``make kube-up``: one control plane in .tools/kube/up until Ctrl-C."""
    directory = ROOT / ".tools" / "kube" / "up"
    shutil.rmtree(directory, ignore_errors=True)
    started = time.monotonic()
    plane = ControlPlane(directory).start()
    print(f"control plane up in {time.monotonic() - started:.1f}s: {plane.url}", file=sys.stderr)
    print(f"export KUBECONFIG={plane.kubeconfig}")
    print(f"(no nodes: Pods stay Pending; logs and the audit log in {directory}; Ctrl-C stops)")
    return run_until_stopped(plane)


if __name__ == "__main__":
    raise SystemExit(main())
