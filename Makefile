# Churn early-warning system. `make help` lists the targets.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYTHONHASHSEED := 0

.DEFAULT_GOAL := help
.PHONY: help setup demo test test-fast lint format bench clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  \033[36m%-8s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PY) >/dev/null || { echo "need $(PY) (Python 3.11)"; exit 1; }
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP) ## Create .venv and install the project with pinned dependencies
	@echo "ready: $(BIN)/churn"

demo: setup ## Generate a ~20,000-subscriber operator and run every step end to end
	$(BIN)/churn demo

test: setup ## Run the whole test suite: unit, data, model, e2e (Prefect, notebooks)
	$(BIN)/python -m pytest -q

test-fast: setup ## Run the unit tests only (seconds)
	$(BIN)/python -m pytest -q -m unit

lint: setup ## ruff lint + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: setup ## Throughput and peak memory per stage (~20 min at BENCH_SUBSCRIBERS=100000, the default)
	$(BIN)/python -m benchmarks.run

clean: ## Remove generated data (keeps data/README.md) and the venv
	find data -mindepth 1 ! -name README.md -prune -exec rm -rf {} +
	rm -rf $(VENV)
