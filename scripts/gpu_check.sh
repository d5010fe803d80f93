#!/usr/bin/env bash
# `make gpu-check`: the paper presets rehearsed on the local CUDA GPU(s) (FSDP, bf16-mixed, chunked KD,
# teacher targets, senses and evaluation on the GPUs), a few steps of the paper-llama3 preset at its size
# on one GPU (random weights; peak memory against `dskd memory`), then FSDP, DeepSpeed ZeRO-2/3 and bf16
# throughput checks; at most 8 minutes. Needs only this repository (no network, no assets) and a Python with
# torch, lightning, transformers and omegaconf: the virtual environment, or PY=python3 with the
# packages installed. Extra arguments go to scripts/gpu_check.py (e.g. --only rehearse, --steps 4).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu-check: no CUDA GPU visible to $("$PY" -c 'import torch; print("torch", torch.__version__)' 2>&1);" \
         "run it on a machine with a GPU and a CUDA build of torch." >&2
    exit 2
fi
if ! "$PY" -c "import deepspeed" 2>/dev/null; then
    echo "gpu-check: deepspeed is not installed; the DeepSpeed checks are skipped" \
         "(DS_BUILD_OPS=0 $PY -m pip install deepspeed)." >&2
fi
export WANDB_MODE=offline HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 480 "$PY" scripts/gpu_check.py "$@"
