# A real Kubernetes node beside the control plane of mk/kube.mk: kubelet, kube-scheduler and
# kube-proxy built from the same wrapper module (tools/kube), Debian's containerd, runc and CNI
# plugins, a pause image built here. harness/node.py runs it (docs/deploy.md "A real node").
# Included by the main Makefile.
#
# The node binaries have a stamp of their own: kube-build's rule removes `.built-*` stamps.

NODE_STAMP    := $(KUBE_BIN)/.node-built-$(KUBE_RELEASE)
NODE_CMDS     := k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kube-proxy
# CoreDNS with only the plugins the node needs (no `forward`): tools/coredns pins it.
COREDNS_DIR   := tools/coredns
# Debian packages the node needs (iptables: the kubelet's and kube-proxy's rules; nftables: `nft
# list ruleset` to check teardown left nothing).
NODE_DEBS     ?= containerd runc containernetworking-plugins iptables nftables conntrack
NODE_TOOLS    ?= containerd ctr runc iptables nft conntrack
NODE_IMAGES   := .tools/node/images
# The sandbox ("pause") image the kubelet v1.33 asks for, built from the kubelet module's source.
PAUSE_IMAGE   := registry.k8s.io/pause:3.10
PAUSE_ARCHIVE := $(NODE_IMAGES)/pause-3.10.tar
# k8s/dev's Kafka, PostgreSQL and Redis built from Debian packages (k8s/dev/images), the names
# k8s/dev-node selects: `make kind-deploy DEV_KUSTOMIZE=k8s/dev-node` on a node.
DEV_ARCHIVE   := $(NODE_IMAGES)/dev-images.tar

.PHONY: node-deps node-build node-pause node-load node-dev-images node-clean node-test

node-deps: image-deps ## install containerd, runc, CNI plugins, iptables, nftables (Debian; idempotent)
	@missing=""; for t in $(NODE_TOOLS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	[ -x /usr/lib/cni/bridge ] || missing="$$missing cni-plugins"; \
	if [ -n "$$missing" ]; then echo "installing$$missing (Debian) ..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    $(NODE_DEBS) >/dev/null; fi
	@# Debian starts the packaged containerd service: the node runs its own, so stop that one.
	@if command -v systemctl >/dev/null 2>&1 && systemctl is-active -q containerd 2>/dev/null; then \
	  systemctl disable --now containerd >/dev/null 2>&1 || true; fi

node-build: $(NODE_STAMP) ## build kubelet, kube-scheduler, kube-proxy and CoreDNS into .tools/kube/bin (cached)

$(NODE_STAMP): $(KUBE_DIR)/go.mod $(KUBE_DIR)/go.sum $(COREDNS_DIR)/go.mod $(COREDNS_DIR)/go.sum \
  $(COREDNS_DIR)/main.go mk/node.mk
	@command -v go >/dev/null 2>&1 || { echo "make node-build needs Go 1.24+"; exit 1; }
	@echo "building the node ($(KUBE_RELEASE)) and CoreDNS into $(KUBE_BIN) ..."
	@mkdir -p $(KUBE_BIN)
	cd $(KUBE_DIR) && CGO_ENABLED=0 GOFLAGS=-mod=readonly nice -n 10 go build -p $(KUBE_GO_JOBS) -trimpath \
	  -ldflags '$(KUBE_LDFLAGS)' -o $(CURDIR)/$(KUBE_BIN)/ $(NODE_CMDS)
	cd $(COREDNS_DIR) && CGO_ENABLED=0 GOFLAGS=-mod=readonly nice -n 10 go build -p $(KUBE_GO_JOBS) -trimpath \
	  -ldflags '-s -w' -o $(CURDIR)/$(KUBE_BIN)/coredns .
	@rm -f $(KUBE_BIN)/.node-built-* && touch $@

node-pause: $(PAUSE_ARCHIVE) ## build the pause image (gcc -static of the kubelet module's pause.c, buildah from scratch)

$(PAUSE_ARCHIVE): $(KUBE_DIR)/go.mod mk/node.mk
	@mkdir -p $(NODE_IMAGES)
	cd $(KUBE_DIR) && go mod download k8s.io/kubernetes
	src=$$(cd $(KUBE_DIR) && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c; \
	gcc -Os -Wall -Werror -static -DVERSION=3.10 -o $(NODE_IMAGES)/pause $$src && strip $(NODE_IMAGES)/pause
	CONTAINERS_CONF=$(CURDIR)/tests/images/containers.conf scripts/build_pause_image.sh \
	  $(NODE_IMAGES)/pause $(PAUSE_IMAGE) $@.tmp && mv $@.tmp $@

# make image-check's images (built with buildah, in podman's store) as one docker-archive, which
# a starting node imports (make kube-up, the tests) and a running one at once.
NODE_APP_IMAGES = $(shell $(PY) -c "from tests.images.podman import TARGETS, TAG, image_name; print(TAG, *map(image_name, TARGETS))" 2>/dev/null)
node-load: $(STAMP) node-deps node-pause ## export make image-check's images for the node's containerd (imported at start, or now into a running node)
	@set -- $(NODE_APP_IMAGES); tag=$$1; shift; \
	for i in "$$@"; do podman image exists $$i || { echo "$$i is missing: run make image-check first"; exit 1; }; done; \
	rm -f $(NODE_IMAGES)/app-*.tar; podman save -q -m --format docker-archive -o $(NODE_IMAGES)/app-$$tag.tar "$$@"
	$(PY) -m harness.node load $(PAUSE_ARCHIVE) $(NODE_IMAGES)/app-*.tar $(wildcard $(DEV_ARCHIVE))

node-dev-images: $(STAMP) node-deps kafka ## build k8s/dev's Kafka, PostgreSQL, Redis from Debian packages for the node (imported now if one runs)
	nice -n 10 $(PY) -m tests.node.dev_images $(DEV_ARCHIVE)
	$(PY) -m harness.node load $(DEV_ARCHIVE)

node-clean: $(STAMP) ## remove whatever a killed node left (processes, mounts, bridge, rules, sysctls)
	$(PY) -m harness.node clean

node-test: $(STAMP) tools kube-build keda-build node-build node-deps node-pause kafka ## the chart's pods on a real node (tests/node)
	$(PY) -m pytest -q -p no:cacheprovider -m node tests/node $(PYTEST_ARGS)
