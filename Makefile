# kubevolve — `make demo` runs a real evolution locally; `make test` runs the test suite.
# Both create .venv when it is missing, install torch (CPU build) first, then the project with its test extras.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
TASK   ?= circle_packing
DEMO_CANDIDATES ?= 1500
DEMO_EVALUATORS ?= 2
PYTEST_ARGS ?=

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test test-all lint format bench clean

setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	DS_BUILD_OPS=0 $(BIN)/pip install -q --no-build-isolation deepspeed==0.19.8
	$(BIN)/pip install -q -e '.[test,train,embeddings]'
	touch $(STAMP)

demo: setup
	$(BIN)/kubevolve run tasks/$(TASK) --new --max-candidates $(DEMO_CANDIDATES) --evaluators $(DEMO_EVALUATORS)
	@echo
	@echo "Next: $(BIN)/kubevolve status · $(BIN)/kubevolve lineage · $(BIN)/kubevolve best --json"

test: setup
	$(BIN)/pytest -q $(PYTEST_ARGS)

test-all: setup
	$(BIN)/pytest -q -m "" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check operator tests benchmarks tasks
	$(BIN)/ruff format --check operator tests benchmarks tasks

format: setup
	$(BIN)/ruff check --fix operator tests benchmarks tasks
	$(BIN)/ruff format operator tests benchmarks tasks

bench: setup
	$(BIN)/python benchmarks/occupancy.py
	$(BIN)/python benchmarks/engine_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
