# modeldeploy — run `make help` for the targets.
SHELL := bash
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export MODELDEPLOY_CACHE ?= $(HOME)/.cache/modeldeploy
DEVCLUSTER_DIR ?= $(CURDIR)/.devcluster

.PHONY: help
help: ## Show this help.
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-22s\033[0m %s\n", $$1, $$2}'

##@ Setup
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

.PHONY: venv
venv: $(STAMP) ## Create .venv with the operator, serving and dev dependencies.

.PHONY: control-plane
control-plane: ## Build kube-apiserver, controller-manager, scheduler, kubectl, etcd and kwok into the cache (once).
	hack/build-control-plane.sh >/dev/null

##@ Development
.PHONY: lint
lint: venv ## Lint, check formatting and type-check.
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

.PHONY: fmt
fmt: venv ## Format the code and apply safe lint fixes.
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

.PHONY: test
# Parallel test workers, each with its own embedded control plane (TEST_WORKERS=0: one process).
TEST_WORKERS ?= 2

test: venv $(if $(KUBECONFIG),,control-plane) ## Run every test tier (unit, serving, integration on a real control plane).
	$(PY) -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS)) $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: venv ## Run the fast tests that need no cluster and no network.
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

##@ API
CRD_FILE := crds/modeldeploy.io_modeldeployments.yaml

.PHONY: crds
crds: venv ## Generate the ModelDeployment CRD from the pydantic models (operator/modeldeploy/api), and the chart's copy.
	$(PY) -m modeldeploy.api.crd $(CRD_FILE)
	$(PY) hack/generate.py

.PHONY: check-crds
check-crds: venv ## Fail with a diff when the committed CRD (or a file generated from it) differs.
	$(PY) -m modeldeploy.api.crd --check $(CRD_FILE)
	$(PY) hack/generate.py --check

##@ Monitoring, Helm and Argo CD
# promtool and helm live in the binary cache beside the control plane (hack/build-control-plane.sh).
TOOLS = $$(dirname $$(hack/build-control-plane.sh 2>/dev/null | tail -n 1))

.PHONY: generated
generated: venv ## Regenerate the PrometheusRule and the chart's copies of the CRD, rules and dashboard.
	$(PY) hack/generate.py

.PHONY: check-generated
check-generated: venv ## Fail with a diff when a generated file (see `generated`) is not current.
	$(PY) hack/generate.py --check

.PHONY: check-rules
check-rules: control-plane ## promtool check and unit tests of the alert rules (manifests/monitoring).
	tools=$(TOOLS)
	$$tools/prometheus/promtool check rules manifests/monitoring/rules.yaml
	cd tests/monitoring && $$tools/prometheus/promtool test rules rules_test.yaml

.PHONY: chart
chart: control-plane check-generated ## helm lint the chart and package it into dist/.
	tools=$(TOOLS)
	$$tools/helm/helm lint --strict charts/modeldeploy
	$$tools/helm/helm package charts/modeldeploy --destination dist

.PHONY: argocd-fixtures
argocd-fixtures: venv control-plane ## Record the Argo CD health fixtures (manifests/argocd/testdata) from real rollouts.
	MODELDEPLOY_WRITE_FIXTURES=1 $(PY) -m pytest tests/integration/test_operate.py $(PYTEST_ARGS)

##@ Run
.PHONY: run
# exec: the demo is make's own child, so make's SIGTERM reaches it and it stops when make dies.
run: venv $(if $(KUBECONFIG),,control-plane) ## Run the operator with a demo model (embedded control plane unless KUBECONFIG is set).
	exec $(PY) hack/run_demo.py

##@ Benchmarks
.PHONY: bench-control-plane
bench-control-plane: venv control-plane ## Time warm starts of the embedded control plane; writes docs/benchmarks.md.
	$(PY) bench/control_plane.py

.PHONY: bench-reconcile
bench-reconcile: venv control-plane ## Time apply → children → Ready, and count API calls of idle passes; writes docs/benchmarks.md.
	$(PY) bench/reconcile.py $(BENCH_ARGS)

.PHONY: bench-scale
bench-scale: venv control-plane ## A fleet: N ModelDeployments vs plain Deployments + Services, idle API requests, RSS, CPU (BENCH_ARGS="--models 1000"); writes docs/benchmarks.md.
	$(PY) bench/scale.py $(BENCH_ARGS)

.PHONY: bench-rollout
bench-rollout: venv control-plane ## Time rollbacks per fault kind and a good canary's promotion; writes docs/benchmarks.md.
	$(PY) bench/rollout.py $(BENCH_ARGS)

##@ Serving
.PHONY: bench-serving
bench-serving: venv ## Benchmark the serving image (REST and gRPC) vs MLServer, KServe and a naive app (~1 h); writes docs/benchmarks.md.
	$(PY) bench/serving/run.py --write-docs $(BENCH_ARGS)

.PHONY: serve-demo
serve-demo: venv ## Train a small iris model and serve it on 127.0.0.1:8080 (Ctrl-C stops).
	mkdir -p .bench/demo
	$(PY) -c 'import joblib; from sklearn.datasets import load_iris; from sklearn.linear_model import LogisticRegression as L; x, y = load_iris(return_X_y=True); joblib.dump(L(max_iter=500).fit(x, y), ".bench/demo/iris.joblib")'
	echo "try: curl -s localhost:8080/v2/models/iris/infer -H 'Content-Type: application/json' -d '{\"inputs\":[{\"name\":\"x\",\"shape\":[1,4],\"datatype\":\"FP32\",\"data\":[5.1,3.5,1.4,0.2]}]}'"
	$(PY) -m modelserver --model-uri .bench/demo/iris.joblib --model-name iris --port 8080

##@ Images
# kubebuilder's names: the operator image and the default serving image it is deployed with.
IMG ?= ghcr.io/modeldeploy/operator:0.1.0
SERVING_IMG ?= ghcr.io/modeldeploy/modelserver:0.1.0
NODE_DIR ?= $(DEVCLUSTER_DIR)/node
NODE_BIN ?= $(MODELDEPLOY_CACHE)/node-k8s-v1.36.3-containerd-v2.2.9/bin

.PHONY: node-packages
node-packages: ## Install the Debian packages images and the real node use (runc, CNI plugins, mmdebstrap, buildah, umoci, iptables) if missing.
	hack/node-packages.sh

.PHONY: images
images: venv node-packages ## Build the serving and operator images from their Dockerfiles (docker, or buildah on a local Debian base); cached, imported into a running node.
	$(PY) -m devcluster.images build --if-possible \
	  $(if $(wildcard $(NODE_DIR)/containerd.sock),--containerd-address $(NODE_DIR)/containerd.sock --ctr $(NODE_BIN)/ctr)

.PHONY: docker-build
docker-build: venv node-packages ## Build the operator image as IMG and the serving image as SERVING_IMG.
	$(PY) -m devcluster.images build --tag operator=$(IMG) --tag modelserver=$(SERVING_IMG)

.PHONY: docker-push
docker-push: venv ## Push IMG and SERVING_IMG to their registries.
	$(PY) -m devcluster.images push $(IMG) $(SERVING_IMG)

.PHONY: deploy
deploy: ## Install the operator on $$KUBECONFIG's cluster with IMG and SERVING_IMG (OVERLAY=cluster-wide|namespaced).
	hack/deploy.sh apply $(IMG) $(SERVING_IMG) $(or $(OVERLAY),cluster-wide)

.PHONY: undeploy
undeploy: ## Remove what `make deploy` installed (the CRD too, and with it every ModelDeployment).
	hack/deploy.sh delete $(IMG) $(SERVING_IMG) $(or $(OVERLAY),cluster-wide)

##@ Real node
.PHONY: node
node: node-packages ## Build kubelet, kube-proxy, containerd and pause into the cache (once).
	hack/build-node.sh >/dev/null

.PHONY: node-up
node-up: venv node images ## Join a real node (kubelet + containerd + runc) to the control plane of `make cluster-up`.
	$(PY) -m devcluster.node up --cluster-dir $(DEVCLUSTER_DIR)

.PHONY: node-down
node-down: venv ## Stop the real node and undo every piece of host state it made.
	$(PY) -m devcluster.node down --cluster-dir $(DEVCLUSTER_DIR)

##@ Local control plane
.PHONY: cluster-up
cluster-up: venv control-plane ## Start the embedded control plane (kubeconfig in .devcluster/kubeconfig).
	$(PY) -m devcluster up --dir $(DEVCLUSTER_DIR)

.PHONY: cluster-down
cluster-down: venv ## Stop the embedded control plane and remove its state.
	$(PY) -m devcluster down --dir $(DEVCLUSTER_DIR)

.PHONY: kind-up
kind-up: ## Create a kind cluster (needs a Docker engine; exits cleanly without one).
	@if ! docker info >/dev/null 2>&1; then
	  echo "kind-up: no Docker engine here (docker info failed), so kind cannot run. Skipping."
	  echo "Use 'make cluster-up' for the embedded control plane instead."
	  exit 0
	fi
	kind create cluster --name modeldeploy
	echo "Now: export KUBECONFIG=\$$(kind get kubeconfig-path --name modeldeploy 2>/dev/null || echo ~/.kube/config); make test"

.PHONY: kind-e2e
kind-e2e: ## Run the test suite against a kind cluster (needs Docker; exits cleanly without).
	@if ! docker info >/dev/null 2>&1; then
	  echo "kind-e2e: no Docker engine here (docker info failed), so kind cannot run. Skipping."
	  exit 0
	fi
	$(MAKE) kind-up
	KUBECONFIG=$$(mktemp) && kind get kubeconfig --name modeldeploy > $$KUBECONFIG && KUBECONFIG=$$KUBECONFIG $(MAKE) test

.PHONY: clean
clean: ## Remove the virtual environment and local state (keeps the binary cache).
	rm -rf $(VENV) .devcluster .pytest_cache .ruff_cache .mypy_cache
