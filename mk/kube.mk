# A real Kubernetes control plane for the tests and for a person: etcd, kube-apiserver and
# kube-controller-manager built from the Go module proxy (tools/kube/go.mod pins the release) into
# .tools/kube/bin, started on loopback by harness/kube.py. No kubelet, no scheduler: pods stay
# Pending. Included by the main Makefile.
#
# The first build compiles Kubernetes (~7 min on 2 cores); after that the Go build cache
# (~/.cache/go-build) and the stamp make `kube-build` a no-op. One build at a time (-p), niced, so
# the machine stays usable; -trimpath and no cgo keep the cache independent of the checkout path.

KUBE_RELEASE  := v1.33.13
KUBE_DIR      := tools/kube
KUBE_BIN      := .tools/kube/bin
KUBE_STAMP    := $(KUBE_BIN)/.built-$(KUBE_RELEASE)
KUBE_GO_JOBS  ?= 2
# kube-apiserver reports this version (helm checks the chart's kubeVersion against it).
KUBE_VERSION_PKGS := k8s.io/component-base/version k8s.io/client-go/pkg/version
KUBE_LDFLAGS  := -s -w $(foreach p,$(KUBE_VERSION_PKGS),-X $(p).gitVersion=$(KUBE_RELEASE) \
  -X $(p).gitMajor=1 -X $(p).gitMinor=33 -X $(p).gitTreeState=clean)
KUBE_CMDS     := ./cmd/etcd k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager

.PHONY: kube-build kube-up

kube-build: $(KUBE_STAMP) ## build etcd, kube-apiserver, kube-controller-manager into .tools/kube/bin (cached)

$(KUBE_STAMP): $(KUBE_DIR)/go.mod $(KUBE_DIR)/go.sum $(wildcard $(KUBE_DIR)/cmd/*/*.go) mk/kube.mk
	@command -v go >/dev/null 2>&1 || { echo "make kube-build needs Go 1.24+ (https://go.dev/dl or apt-get install golang)"; exit 1; }
	@echo "building the control plane ($(KUBE_RELEASE)) into $(KUBE_BIN); the first build takes minutes ..."
	@mkdir -p $(KUBE_BIN)
	cd $(KUBE_DIR) && CGO_ENABLED=0 GOFLAGS=-mod=readonly nice -n 10 go build -p $(KUBE_GO_JOBS) -trimpath \
	  -ldflags '$(KUBE_LDFLAGS)' -o $(CURDIR)/$(KUBE_BIN)/ $(KUBE_CMDS)
	@rm -f $(KUBE_BIN)/.built-* && touch $@

kube-up: $(STAMP) tools kube-build ## start a local control plane (etcd + apiserver + controller-manager) and print its KUBECONFIG; Ctrl-C stops it
	$(PY) -m harness.kube
