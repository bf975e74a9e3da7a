# Real images and pods without a Docker engine: buildah builds every Dockerfile target against a
# stand-in python:3.11-slim-bookworm base (Debian's python3), podman runs the chart's rendered pods
# (tests/images; docs/deploy.md "Images and pods verified here"). Included by the main Makefile.
# Pod logs and the played YAML stay in .tools/image-check/pods0 after a run.

IMAGE_DEBS ?= podman buildah runc catatonit debootstrap

.PHONY: image-deps image-check

image-deps: ## install podman, buildah, runc, catatonit, debootstrap (Debian; once, idempotent)
	@missing=""; for t in $(IMAGE_DEBS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then echo "installing$$missing (Debian) ..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    $(IMAGE_DEBS) >/dev/null; fi

image-check: $(STAMP) tools image-deps kafka ## build every image target and run the chart's pods with podman (~2 min warm)
	$(PY) -m pytest -q -p no:cacheprovider --basetemp=.tools/image-check -m images tests/images $(PYTEST_ARGS)
