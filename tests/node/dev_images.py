"""k8s/dev's Kafka, PostgreSQL and Redis as images built here (`make node-dev-images`).

The recipe is k8s/dev/images/Containerfile (one target per service, on the debootstrap'ed
bookworm base of tests/images/podman.py); the names and tags are the ones k8s/dev-node's
kustomize ``images:`` select, read from that file so the two cannot drift. The images are saved
as one docker-archive for the node's containerd.

    python -m tests.node.dev_images [ARCHIVE]   # build (layers cached), save, print the times
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import yaml

from app.local.kafka_jars import kafka_libs
from tests.images.podman import INSTANCE, ULIMITS, WORK_DIR, ensure_base, podman, run
from tests.k8s_helpers import ROOT

RECIPE = ROOT / "k8s" / "dev" / "images"
OVERLAY = ROOT / "k8s" / "dev-node" / "kustomization.yaml"
ARCHIVE = ROOT / ".tools" / "node" / "images" / "dev-images.tar"


def overlay_images() -> dict[str, str]:
    """Containerfile target -> image name, from the overlay (``apache/kafka`` -> ``kafka``)."""
    entries = yaml.safe_load(OVERLAY.read_text())["images"]
    return {e["name"].rsplit("/", 1)[-1]: f"{e['newName']}:{e['newTag']}" for e in entries}


def stage_context() -> Path:
    """The build context: the recipe folder plus Kafka's jars (outside the repository's tree)."""
    context = WORK_DIR / f"dev-images-{INSTANCE}"
    shutil.rmtree(context, ignore_errors=True)
    shutil.copytree(RECIPE, context)
    shutil.copytree(kafka_libs(), context / "kafka" / "libs")
    return context


def build(target: str, name: str, base: str, context: Path) -> None:
    run(
        [
            *("buildah", "bud", "--layers", "--force-rm", "--isolation", "chroot", *ULIMITS),
            *("--build-arg", f"BASE={base}", "--target", target, "-t", name),
            *("-f", str(context / "Containerfile"), str(context)),
        ],
        timeout=1800,
    )


def build_all() -> dict[str, float]:
    """Build every target; seconds per step (``base`` is the shared stand-in base)."""
    times: dict[str, float] = {}
    started = time.monotonic()
    base = ensure_base()
    times["base"] = time.monotonic() - started
    context = stage_context()
    try:
        for target, name in overlay_images().items():
            started = time.monotonic()
            build(target, name, base, context)
            times[target] = time.monotonic() - started
    finally:
        shutil.rmtree(context, ignore_errors=True)
    return times


def save(archive: Path = ARCHIVE) -> Path:
    """The three images as one docker-archive (what a node's containerd imports)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    names = list(overlay_images().values())
    podman("save", "-q", "-m", "--format", "docker-archive", "-o", str(partial), *names)
    partial.replace(archive)
    return archive


def main(argv: list[str]) -> int:
    archive = Path(argv[0]) if argv else ARCHIVE
    times = build_all()
    started = time.monotonic()
    save(archive)
    times["save"] = time.monotonic() - started
    print(f"{archive}: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
