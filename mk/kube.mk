# A real Kubernetes control plane for the tests and for a person: etcd, kube-apiserver and
# kube-controller-manager built from the Go module proxy (tools/kube/go.mod pins the release) into
# .tools/kube/bin, started on loopback by harness/kube.py. The node (kubelet, kube-scheduler,
# kube-proxy, containerd) is mk/node.mk's. Included by the main Makefile.
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

# With a node (mk/node.mk, harness/node.py: containerd, kubelet, kube-scheduler, kube-proxy; root,
# Debian) unless KUBE_NODE=0, which starts the control plane alone (Pods stay Pending).
KUBE_NODE ?= 1
kube-up: $(STAMP) tools kube-build $(if $(filter 1,$(KUBE_NODE)),node-build node-deps node-pause) ## start a control plane and a real node (KUBE_NODE=0: control plane only), print KUBECONFIG; Ctrl-C stops and cleans up
ifeq ($(KUBE_NODE),1)
	$(PY) -m harness.node up $(wildcard .tools/node/images/app-*.tar .tools/node/images/dev-images.tar)
else
	$(PY) -m harness.kube
endif

# Third-party CRDs from their own Go API types, by controller-gen (tools/crds pins it and the
# Prometheus Operator; tools/keda pins KEDA): `make crds` rewrites tests/schemas/crds/, `make
# crds-check` (part of `make test`) regenerates them into .tools and fails on any drift. The
# check's stamp depends on the pins and the committed files: a no-op until one of them changes.
CRDS_DIR      := tools/crds
KEDA_DIR      := tools/keda
CRDS_OUT      := tests/schemas/crds
CONTROLLER_GEN := $(KUBE_BIN)/controller-gen
CRDS_STAMP    := .tools/crds/.checked
# package = the CRD files of it that the chart's resources need
CRDS_KEDA     := github.com/kedacore/keda/v2/apis/...
CRDS_KEDA_FILES := keda.sh_scaledobjects.yaml keda.sh_triggerauthentications.yaml
CRDS_MON      := github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1
CRDS_MON_FILES := monitoring.coreos.com_servicemonitors.yaml monitoring.coreos.com_podmonitors.yaml \
  monitoring.coreos.com_prometheusrules.yaml

.PHONY: crds crds-check keda-build

$(CONTROLLER_GEN): $(CRDS_DIR)/go.mod $(CRDS_DIR)/go.sum
	@mkdir -p $(KUBE_BIN)
	cd $(CRDS_DIR) && CGO_ENABLED=0 GOFLAGS=-mod=readonly nice -n 10 go build -p $(KUBE_GO_JOBS) -trimpath \
	  -ldflags '-s -w' -o $(CURDIR)/$(CONTROLLER_GEN) sigs.k8s.io/controller-tools/cmd/controller-gen

# $(call crds-generate,<output dir>): every KEDA and Prometheus Operator CRD into .tools/crds/gen,
# the selected files into the directory.
define crds-generate
	@rm -rf .tools/crds/gen && mkdir -p .tools/crds/gen $(1)
	cd $(KEDA_DIR) && $(CURDIR)/$(CONTROLLER_GEN) crd:crdVersions=v1 paths=$(CRDS_KEDA) \
	  output:crd:dir=$(CURDIR)/.tools/crds/gen/keda
	cd $(CRDS_DIR) && $(CURDIR)/$(CONTROLLER_GEN) crd:crdVersions=v1 paths=$(CRDS_MON) \
	  output:crd:dir=$(CURDIR)/.tools/crds/gen/monitoring
	@cp $(addprefix .tools/crds/gen/keda/,$(CRDS_KEDA_FILES)) \
	  $(addprefix .tools/crds/gen/monitoring/,$(CRDS_MON_FILES)) $(1)/
endef

crds: $(CONTROLLER_GEN) ## regenerate tests/schemas/crds/ (KEDA, Prometheus Operator) with controller-gen
	$(call crds-generate,$(CRDS_OUT))

crds-check: $(CRDS_STAMP) ## fail when tests/schemas/crds/ differs from what controller-gen generates

$(CRDS_STAMP): $(CONTROLLER_GEN) $(KEDA_DIR)/go.mod $(wildcard $(CRDS_OUT)/*.yaml) mk/kube.mk
	$(call crds-generate,.tools/crds/check)
	@diff -r -q $(CRDS_OUT) .tools/crds/check >/dev/null || { \
	  echo "$(CRDS_OUT) is not what controller-gen generates from the pins in tools/: run make crds" >&2; \
	  diff -r $(CRDS_OUT) .tools/crds/check | head -20 >&2; exit 1; }
	@touch $@

# KEDA's operator (tests/kube/test_keda.py runs it against the control plane and a real broker),
# its metrics API server (cmd/adapter: the external.metrics.k8s.io API the HPA reads, which
# tests/node/test_keda_on_node.py registers through the API server's aggregation layer) and every
# CRD the operator watches (ScaledJobs, CloudEventSources, ... which the chart does not use: kept
# out of tests/schemas, generated into .tools/keda/crds). The first build takes ~7 min.
KEDA_STAMP := $(KUBE_BIN)/.keda-built
keda-build: $(KEDA_STAMP) ## build KEDA's operator and metrics API server, generate its CRDs into .tools (cached)

$(KEDA_STAMP): $(KEDA_DIR)/go.mod $(KEDA_DIR)/go.sum $(CONTROLLER_GEN) mk/kube.mk
	@echo "building KEDA's operator and metrics API server into $(KUBE_BIN); the first build takes minutes ..."
	cd $(KEDA_DIR) && CGO_ENABLED=0 GOFLAGS=-mod=readonly nice -n 10 go build -p $(KUBE_GO_JOBS) -trimpath \
	  -ldflags '-s -w' -o $(CURDIR)/$(KUBE_BIN)/keda-operator github.com/kedacore/keda/v2/cmd/operator
	cd $(KEDA_DIR) && CGO_ENABLED=0 GOFLAGS=-mod=readonly nice -n 10 go build -p $(KUBE_GO_JOBS) -trimpath \
	  -ldflags '-s -w' -o $(CURDIR)/$(KUBE_BIN)/keda-adapter github.com/kedacore/keda/v2/cmd/adapter
	@rm -rf .tools/keda/crds && mkdir -p .tools/keda
	cd $(KEDA_DIR) && $(CURDIR)/$(CONTROLLER_GEN) crd:crdVersions=v1 paths=$(CRDS_KEDA) \
	  output:crd:dir=$(CURDIR)/.tools/keda/crds
	@rm -f .tools/keda/crds/keda.sh_withtriggers.yaml  # an internal type, not in KEDA's release
	@touch $@
