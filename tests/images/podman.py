"""podman/buildah for `make image-check`: a stand-in Python base, the Dockerfile's targets, kube play.

No registry image can be pulled here, so the base equivalent to ``python:3.11-slim-bookworm`` is
built from Debian (debootstrap + Debian's python3 + a venv at /usr/local, which puts ``python`` and
``pip`` where the official image has them) and passed through the Dockerfile's ``PYTHON_IMAGE``
build arg. The base is cached in podman's image store under a tag keyed on everything that built it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tests.k8s_helpers import ROOT

HERE = Path(__file__).resolve().parent
CONTAINERS_CONF = HERE / "containers.conf"
SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_REPO = "localhost/coupon-issuer-pybase"
# Where the official base has them: python/pip in /usr/local/bin, C.UTF-8, a python CMD.
BASE_CHANGES = (
    "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
)
WORK_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "coupon-issuer-images"
# The machine's CA bundle: registries are reached through a TLS-intercepting proxy, so the build
# stage's pip inside the stand-in base needs it (the official base is used where PyPI is direct).
HOST_CA = Path(os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"))
TARGETS = ("api", "consumer", "operator", "lag-exporter", "runtime")
# Worktrees on one machine share podman's store: each gets its own image tags and pod names.
INSTANCE = hashlib.sha256(str(ROOT).encode()).hexdigest()[:8]
TAG = f"check-{INSTANCE}"
ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000")


def image_name(target: str) -> str:
    """The local name of a Dockerfile target's image (the repositories the pods profile uses)."""
    suffix = "" if target == "runtime" else f"-{target}"
    return f"localhost/coupon-issuer{suffix}:{TAG}"


def tool_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def run(
    cmd: list[str], *, check: bool = True, timeout: float = 600, input_bytes: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Run podman/buildah/... with our containers.conf; on failure raise with the output."""
    proc = subprocess.run(
        cmd,
        env=tool_env(),
        capture_output=True,
        timeout=timeout,
        input=input_bytes,
        check=False,
    )
    out = subprocess.CompletedProcess(
        cmd,
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
        )
    return out


def podman(
    *args: str, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return run(["podman", *args], check=check, timeout=timeout)


def image_exists(name: str) -> bool:
    return podman("image", "exists", name, check=False).returncode == 0


def inspect_image(name: str) -> dict[str, Any]:
    return json.loads(podman("image", "inspect", name).stdout)[0]  # type: ignore[no-any-return]


def base_key() -> str:
    """Digest of everything that builds the stand-in base: recipe, mirror, packages, CA bundle."""
    h = hashlib.sha256()
    for part in (SUITE, DEBIAN_MIRROR, *BASE_PACKAGES, *BASE_CHANGES, "venv:/usr/local"):
        h.update(part.encode() + b"\0")
    h.update(HOST_CA.read_bytes())
    return h.hexdigest()[:12]


def ensure_base() -> str:
    """The stand-in Python base, built once per key (~1 min) and reused from podman's store."""
    name = f"{BASE_REPO}:3.11-{SUITE}-{base_key()}"
    if image_exists(name):
        return name
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=WORK_DIR))
    try:
        run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                SUITE,
                str(rootfs),
                DEBIAN_MIRROR,
            ],
            timeout=900,
        )
        run(["chroot", str(rootfs), "python3", "-m", "venv", "/usr/local"])
        shutil.copyfile(HOST_CA, rootfs / "etc/ssl/certs/ca-certificates.crt")
        for cache in ("var/cache/apt", "var/lib/apt/lists"):
            for entry in (rootfs / cache).glob("*"):
                if entry.is_file():
                    entry.unlink()
        tar = subprocess.run(
            ["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."],
            capture_output=True,
            check=True,
        ).stdout
        changes = [arg for change in BASE_CHANGES for arg in ("--change", change)]
        run(["podman", "import", *changes, "-", name], input_bytes=tar)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    for old in podman("images", "--format", "{{.Repository}}:{{.Tag}}", BASE_REPO).stdout.split():
        if old != name:
            podman("rmi", old, check=False)
    return name


def build(target: str, base: str) -> str:
    """Build one Dockerfile target against ``base`` (layers cached between runs)."""
    name = image_name(target)
    run(
        [
            "buildah",
            "bud",
            "--layers",
            "--force-rm",  # a failed build leaves no working container behind
            "--isolation",
            "chroot",
            *ULIMITS,
            "--build-arg",
            f"PYTHON_IMAGE={base}",
            "--target",
            target,
            "-t",
            name,
            str(ROOT),
        ],
        timeout=1500,
    )
    return name


def run_in(
    image: str, *args: str, entrypoint: str | None = None, user: str | None = "10001:10001"
) -> subprocess.CompletedProcess[str]:
    """Run a throw-away container locked down as the chart runs it (read-only, no capabilities)."""
    options = ["--rm", "--network", "host", "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL"]
    options += ["--security-opt", "no-new-privileges"]
    if user is not None:
        options += ["--user", user]
    if entrypoint is not None:
        options += ["--entrypoint", entrypoint]
    return podman("run", *options, image, *args, check=False)
