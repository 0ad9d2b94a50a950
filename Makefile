# Two commands do everything on a fresh machine: `make compress` and `make test` (both set up on first use).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build from local disk here; on a CUDA machine use e.g. TORCH_SPEC='torch>=2.10'
TORCH_SPEC ?= torch==2.13.0

MODEL ?= smollm2-135m
RECIPE ?= recipes/wanda-2of4.yaml
OUT ?= out/$(MODEL)-$(basename $(notdir $(RECIPE)))
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
# Without a GPU the default job uses a smaller calibration and 16 perplexity windows (labelled in report.json).
CPU_ARGS ?= $(if $(HAS_GPU),,--nsamples 32 --seqlen 1024 --eval-max-windows 16)
ARGS ?=

.PHONY: setup compress test bench lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m compress.assets fetch
	touch $@

compress: setup
	$(PY) -m compress run --model $(MODEL) --recipe $(RECIPE) --out $(OUT) $(CPU_ARGS) $(ARGS)

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/foundation.py $(if $(HAS_GPU),--batch-size 8,--nsamples 32 --seqlen 1024 --eval-max-windows 16 --json bench/foundation_cpu.json)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf $(VENV) out
