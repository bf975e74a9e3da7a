# coupon-issuer: `make run` starts the local stack, `make test` runs the whole suite.
# Both create .venv and install everything they need on a fresh machine.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# make run keeps its broker, PostgreSQL and Redis data here between runs (make run FRESH=1 or
# make clean starts from nothing). Relative to this directory, or absolute; spaces are fine.
STATE_DIR ?= .local-stack
# The code ruff checks: the product, the bench, their shared harness and the tests.
CODE   := app bench dashboards harness tests

.PHONY: run test lint fmt bench deps clean help
.DEFAULT_GOAL := help

help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

deps: $(STAMP) ## create .venv and install the locked dependencies

# exec: the shell steps aside, so a SIGTERM that make passes on to its recipe reaches the stack.
run: $(STAMP) server-deps kafka ## start API + consumers + broker locally (embedded stack unless COUPON_* URLs are set)
	exec $(VENV)/bin/coupon-issuer dev --state-dir "$(STATE_DIR)" $(if $(FRESH),--fresh)

lint: $(STAMP) ## ruff + mypy
	$(VENV)/bin/ruff check $(CODE)
	$(VENV)/bin/ruff format --check $(CODE)
	$(VENV)/bin/mypy

fmt: $(STAMP) ## format the code
	$(VENV)/bin/ruff format $(CODE)
	$(VENV)/bin/ruff check --fix $(CODE)

test: $(STAMP) system-deps kafka kube-build keda-build crds-check lint ## the whole suite: unit, integration, e2e, chaos, the real Kubernetes API server
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

clean: ## remove the venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .tools "$(STATE_DIR)"

-include mk/*.mk
