#!/usr/bin/env bash
# One command that runs and times every CUDA path of medm3 (VILA fp16, HF bf16,
# batched generation, VISTA3D AMP vs the reference-style pipeline, BraTS, the
# CXR ensemble, one LoRA and one full bf16 training step, m3 serve batched, and the
# tests marked gpu: pytest -m gpu tests/gpu),
# offline, with random weights in the released layouts. Prints one table and
# exits non-zero when any step fails. Budget: under 8 minutes on one modern GPU.
#
#   benchmarks/gpu_check.sh            # on a CUDA machine
#   benchmarks/gpu_check.sh --dry      # CPU only, smallest shapes (CI; also MEDM3_GPU_CHECK_DRY=1)
#   benchmarks/gpu_check.sh --only brats cxr_ensemble -v
#
# PYTHON selects the interpreter (default: python3); the checkout's src/ is used.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PYTHONPATH="$here/../src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MEDM3_NO_PROGRESS=1
exec "${PYTHON:-python3}" "$here/gpu_check.py" "$@"
