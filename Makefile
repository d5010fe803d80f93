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
STAMP_ASSETS := $(VENV)/.stamp-assets

.PHONY: help setup assets test reproduce bench lint gpu-check clean

help:
	@echo "make setup      create $(VENV) (torch==2.13.0 first, then dskd[$(EXTRAS)])"
	@echo "make assets     fetch the offline assets into \$$DSKD_HOME (default ~/.cache/dskd)"
	@echo "make test       run the test suite"
	@echo "make reproduce  run the whole pipeline of PRESET=$(PRESET) (SEEDS=$(SEEDS)) and write results/$(PRESET)/"
	@echo "make bench      run the benchmarks, write results/bench/summary.json"
	@echo "make lint       ruff"
	@echo "make gpu-check  GPU-only checks (FSDP, DeepSpeed, bf16, throughput) on a CUDA machine"
	@echo "make clean      remove the venv, artifacts, runs and results"

setup: $(STAMP_SETUP)

$(STAMP_SETUP): setup.cfg pyproject.toml
	@echo ">>> creating virtual environment $(VENV)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel setuptools
	@echo ">>> installing torch==2.13.0 (CPU wheel; a GPU cluster keeps its own CUDA build)"
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	@echo ">>> installing dskd[$(EXTRAS)]"
	DS_BUILD_OPS=0 $(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

assets: $(STAMP_ASSETS)

$(STAMP_ASSETS): $(STAMP_SETUP) $(wildcard dskd/assets.py dskd/assets/*.py)
	@echo ">>> fetching offline assets (idempotent; cached in \$${DSKD_HOME:-~/.cache/dskd})"
	$(DSKD) assets fetch
	touch $@

test: $(STAMP_ASSETS)
	@echo ">>> running the test suite"
	WANDB_MODE=offline $(PY) -m pytest -q $(PYTEST_ARGS)

reproduce: $(STAMP_ASSETS)
	@echo ">>> reproducing preset $(PRESET) with $(SEEDS) seed(s)"
	WANDB_MODE=$${WANDB_MODE:-offline} $(DSKD) reproduce --preset $(PRESET) --seeds $(SEEDS)

bench: $(STAMP_ASSETS)
	@echo ">>> running benchmarks -> results/bench/"
	$(PY) -m benchmarks --out results/bench

lint: $(STAMP_SETUP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

gpu-check: $(STAMP_SETUP)
	bash scripts/gpu_check.sh

clean:
	rm -rf $(VENV) artifacts runs results wandb build *.egg-info .pytest_cache .ruff_cache
