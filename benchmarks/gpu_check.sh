#!/usr/bin/env bash
# One-GPU check of the training fast paths, sized to finish in under 5 minutes with the offline
# encoder: samples/s, tokens/s, model FLOP utilisation, MLflow share, and the projected time of
# the full reference recipe. Writes benchmarks/GPU_CHECK.md. Extra arguments go to
# `python -m benchmarks.gpu_check` (e.g. --reviews 2048, --batch-size 32).
#
#   bash benchmarks/gpu_check.sh
#
# Needs a CUDA build of torch: install the project without the CPU pin (pip install -e '.[bench]').
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "error: torch sees no CUDA GPU (a CPU build of torch, or no GPU); nothing measured" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
# 290 s: the whole check, eager then torch.compile; each run's table is written as soon as it ends.
exec timeout 290 "$PY" -m benchmarks.gpu_check --compile --output benchmarks/GPU_CHECK.md "$@"
