#!/usr/bin/env bash
# GPU check (benchmarks/gpu_bench.py): Qwen2-0.5B-shaped KaLMEmbedder vs sentence-transformers on one GPU:
# training tokens/s + MFU at sequence length 512 (plain MNRL and GradCache/CachedMNRL) and encode throughput;
# then a torch.profiler breakdown of kalm's plain step ($OUT/gpu_profile.txt) and kalm alone with each MFU
# lever (packing on fixed and mixed lengths, compile, batch x2 + checkpointing, their combinations, a frozen
# embedding table, AdamW foreach instead of fused); --levers "packing;compile" picks levers by name,
# --no-levers skips the profile and the levers. Levers past the time budget are skipped and named.
#
# Runs with `python3` from PATH (no venv, no internet): it needs torch (CUDA), transformers,
# sentence-transformers, accelerate, numpy, pyyaml, safetensors, and kalm_lib from this repository.
# The Qwen2 tokenizer files must be reachable: --tokenizer DIR, or $KALM_DATA_DIR/tokenizers/qwen2, or
# shared/data/tokenizers/qwen2 inside the repository (carry /work/shared/data/tokenizers/qwen2 there).
# Output goes to stdout and, when $OUT is set, to $OUT/gpu_check.txt (+ $OUT/gpu_check.json).
# At most 9.5 minutes: gpu_bench stops at 400 s (later sections skipped past 340 s), then
# benchmarks/gpu_path_check.py (the gpu profile's pipeline at toy sizes on the GPU) at 170 s.
#
#   bash benchmarks/gpu_check.sh                 # on the GPU machine
#   bash benchmarks/gpu_check.sh --tiny          # anywhere: tiny model on CPU, exercises the code path
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
LOG="${OUT:+$OUT/gpu_check.txt}"
LOG="${LOG:-/dev/null}"
{
  echo "host: $(hostname) | $(date -u '+%Y-%m-%d %H:%M:%S UTC') | $PY = $(command -v "$PY")"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
  timeout 400 "$PY" benchmarks/gpu_bench.py --budget-s 340 "$@"
  rc=$?
  [ $rc -eq 124 ] && echo "gpu_check: gpu_bench stopped at its 400 s limit"
  echo "gpu_bench exit status $rc"
  # the gpu profile's own path at toy sizes (mining, teacher and evaluation on cuda, fp32 master weights, MFU)
  # (needs pyarrow and fsspec, in the GPU image; `datasets` (the streamed pre-training) and mteb (its evaluate step)
  # are not there: carry their wheels, e.g. `pip download datasets==5.2.0 dill multiprocess mteb==2.26.24 -d
  # .device/wheels` here and `pip install --no-index --find-links .device/wheels ...` there; without them the
  # check says so and pre-trains map-style / skips evaluation)
  if [[ " $* " == *" --tiny "* ]]; then path_args="--cpu --steps 2 --batch 8 --seq-len 32"; limit=600; else path_args=""; limit=170; fi
  timeout $limit "$PY" benchmarks/gpu_path_check.py $path_args
  rc2=$?
  [ $rc2 -eq 124 ] && echo "gpu_check: gpu_path_check stopped at its $limit s limit"
  echo "gpu_path_check exit status $rc2"
  [ $rc -ne 0 ] && exit $rc
  exit $rc2
} 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
