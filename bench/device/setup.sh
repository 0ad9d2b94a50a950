# sourced at the start of every device call (copied to .gpu/setup.sh by bench/device/stage.sh): lm-eval and friends into /tmp/site, the embedded assets into /tmp/llmc
N=/tmp/site/.wheels$(ls .gpu/whl | md5sum | cut -c1-8)
[ -f $N ] || { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl && touch $N; } || return 1
export PYTHONPATH=/tmp/site:$PWD LLM_COMPRESS_CACHE=/tmp/llmc HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PIP_NO_INDEX=1 PYTHONUNBUFFERED=1
mkdir -p $LLM_COMPRESS_CACHE/smollm2-135m && cp -r --update=none .gpu/cache/. $LLM_COMPRESS_CACHE/
G=$LLM_COMPRESS_CACHE/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf
[ -s $G ] || cat /root/stage/*.part00 /root/stage/*.part01 > $G
echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  $G" | sha256sum -c --quiet || return 1
mkdir -p /root/stage
