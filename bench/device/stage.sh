#!/usr/bin/env bash
# Build .gpu/ (git-ignored) for runs on the lent H200, which has no internet and no lm-eval, gguf or
# compressed-tensors: the wheels it lacks (versions from this venv), the embedded eval data and lm-eval's offline
# task index (built here for the device's paths: lm-eval under /tmp/site, the cache at /tmp/llmc), the SmolLM2
# GGUF split in two transfers. Run from the repo root after `make setup`. Then, one device call each, back to back
# (the machine keeps /root/stage only while warm):
#   carry [".gpu/model/SmolLM2-135M-Instruct.Q4_1.gguf.part00"]  mkdir -p /root/stage && cp .gpu/model/*.part00 /root/stage/
#   carry [".gpu/model/SmolLM2-135M-Instruct.Q4_1.gguf.part01"]  cp .gpu/model/*.part01 /root/stage/
#   carry [".gpu/whl", ".gpu/cache", ".gpu/setup.sh", ...]        source .gpu/setup.sh && python3 bench/...
set -euo pipefail
V=.venv/bin
mkdir -p .git/info && { grep -qx "/.gpu/" .git/info/exclude 2>/dev/null || echo "/.gpu/" >> .git/info/exclude; }
rm -rf .gpu && mkdir -p .gpu/whl .gpu/cache/lm_eval_tasks .gpu/model
PKGS="lm_eval datasets dill evaluate pytablewriter DataProperty mbstrdecoder pathvalidate tabledata tcolorpy typepy
chardet sqlitedict word2number more-itertools multiprocess gguf jsonlines numexpr zstandard compressed-tensors pydantic
pydantic-core annotated-types typing-inspection loguru"
F="--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
--platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
--platform manylinux1_x86_64 -d .gpu/whl"
for n in $PKGS; do
  v=$($V/pip show "$n" 2>/dev/null | awk "/^Version:/{print \$2}" || true)
  spec=$n${v:+==$v}
  python3 -m pip download -q $F "$spec" >/dev/null 2>&1 || $V/pip wheel -q --no-deps -w .gpu/whl "$spec"  # sdist-only
done
CACHE=$($V/python -m compress.assets where)
rm -rf /tmp/site /tmp/llmc && mkdir -p /tmp/llmc
$V/pip install -q --no-deps --no-compile --target /tmp/site .gpu/whl/lm_eval-*.whl
cp -r "$CACHE"/. /tmp/llmc/
KEY=$(LLM_COMPRESS_CACHE=/tmp/llmc PYTHONPATH=/tmp/site:$PWD $V/python -c \
  "from eval.lm_tasks import offline_index, _index_key; offline_index(); print(_index_key())")
cp -r /tmp/llmc/extracted /tmp/llmc/hf_datasets /tmp/llmc/text .gpu/cache/
cp "/tmp/llmc/lm_eval_tasks/index-$KEY.json" .gpu/cache/lm_eval_tasks/  # the index for the device's paths
split -b 49M -d -a 2 "$CACHE/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf" .gpu/model/SmolLM2-135M-Instruct.Q4_1.gguf.part
cp bench/device/setup.sh .gpu/setup.sh
du -sh .gpu/*
