#!/bin/sh
# The node's sandbox image without a registry: a statically linked pause binary in an image built
# from scratch by buildah, saved as a docker-archive that `ctr images import` reads.
# Usage: build_pause_image.sh <pause binary> <image name> <archive>
set -eu
binary=$1 name=$2 archive=$3
ctr=$(buildah from scratch)
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
buildah copy "$ctr" "$binary" /pause >/dev/null
buildah config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
image=$(buildah commit --rm "$ctr" "$name")
trap - EXIT
rm -f "$archive"
buildah push "$image" "docker-archive:$archive:$name" >/dev/null
buildah rmi "$name" >/dev/null
