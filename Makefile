# Two commands do everything on a fresh machine: `make compress` and `make test` (both set up on first use).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build from local disk here; on a CUDA machine use e.g. TORCH_SPEC='torch>=2.10'
TORCH_SPEC ?= torch==2.13.0

MODEL ?= smollm2-135m
# a packaged recipe name (`.venv/bin/llm-compress recipes`) or a path to a YAML file
RECIPE ?= wanda-2of4
OUT ?= out/$(MODEL)-$(basename $(notdir $(RECIPE)))
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
# Without a GPU the default job uses a smaller calibration and 16 perplexity windows (labelled in report.json).
CPU_ARGS ?= $(if $(HAS_GPU),,--nsamples 32 --seqlen 1024 --eval-max-windows 16)
ARGS ?=
# Zero-shot on CPU: the first 50 examples per task and 16 perplexity windows (~6 min per model on 2 cores).
EVAL_ARGS ?= $(if $(HAS_GPU),--batch-size 64,--limit 50 --ppl-max-windows 16)
DENSE_OUT ?= out/$(MODEL)-dense
CHECKPOINTS ?=
MODEL_DIR ?= $(OUT)
REPO ?=

.PHONY: setup compress test bench bench-runtime generate eval compare push lint clean

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

eval: setup
	$(PY) -m compress eval --model $(MODEL) $(EVAL_ARGS)

# dense baseline and the default checkpoint are made on first use; add more with CHECKPOINTS="name=dir ..."
compare: setup
	test -d $(DENSE_OUT) || $(PY) -m compress run --model $(MODEL) --recipe dense --out $(DENSE_OUT) $(CPU_ARGS)
	test -d $(OUT) || $(MAKE) compress
	$(PY) -m compress compare dense=$(DENSE_OUT) $(basename $(notdir $(RECIPE)))=$(OUT) $(CHECKPOINTS) $(EVAL_ARGS) --out out/compare

push: setup
	@test -n "$(REPO)" || { echo "error: set REPO=owner/name (and MODEL_DIR=checkpoint folder)"; exit 2; }
	$(PY) -m compress push --model-dir $(MODEL_DIR) --repo $(REPO) $(ARGS)

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/foundation.py $(if $(HAS_GPU),--batch-size 8,--nsamples 32 --seqlen 1024 --eval-max-windows 16 --json bench/foundation_cpu.json)
	$(PY) bench/zeroshot.py $(if $(HAS_GPU),--batch-size 64,--limit 50 --nsamples 32 --seqlen 1024 --workdir out/bench-zeroshot-cpu --json bench/zeroshot_cpu.json)
	$(PY) bench/pruning.py $(if $(HAS_GPU),--batch-size 8 --llama-layers 4,--part smollm2 --nsamples 32 --seqlen 1024 --eval-max-windows 16 --cells 60,70 --json bench/pruning_cpu.json)
	$(if $(HAS_GPU),$(PY) bench/finetune.py,$(PY) bench/driver_speed.py)
	$(PY) bench/quant.py $(if $(HAS_GPU),--zeroshot all --score-workers 4 --batch-size 128,--nsamples 32 --seqlen 1024 --eval-max-windows 16 --fisher-samples 32 --bases dense --grids w4g64,w4g32,w4 --work out/bench-quant-cpu --json bench/quant_cpu.json)
	$(PY) bench/kmeans.py $(if $(HAS_GPU),--device cuda,--json bench/kmeans_cpu.json)
	$(if $(HAS_GPU),$(MAKE) bench-runtime,@echo "bench-runtime skipped: needs a CUDA GPU")

# The 2:4 runtime (issue #5), GPU only: per-GEMM table, Llama-2-7B-shaped prefill/decode with kernel profiles,
# fused-projection shapes -> bench/runtime.json; cuSPARSELt layout experiment -> bench/logs/cslt_layouts.json
bench-runtime: setup
	$(PY) bench/runtime.py --profile --prefill-graph
	$(PY) bench/runtime.py --skip-e2e --update --shapes 12288x4096,22016x4096 --ms 1,16,2048
	$(PY) bench/cslt_layouts.py
	$(PY) bench/user_path.py

# Greedy generation on the compressed weights: make generate OUT=out/... PROMPT="..."
generate: setup
	$(PY) -m compress generate --model $(OUT) --prompt "$(or $(PROMPT),The capital of France is)" $(ARGS)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf $(VENV) out
