#!/usr/bin/env bash
# Sets up .venv with everything `search` needs. Idempotent: a second run is quick.
# Where no NVIDIA GPU is present it installs the CPU build of torch first, so pip does not pull
# a multi-GB CUDA build; where one is present it adds onnxruntime-gpu (the `cuda` extra).
# `./setup.sh --vision` adds torchvision (the `vision` extra, for torchvision models and the
# image tests), pinned to a torch/torchvision pair that works together on this architecture.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# pip's index here warns about every missing local mirror folder; keep the real messages only.
pip() {
  local log status=0
  log=$(mktemp)
  .venv/bin/python -m pip "$@" >"$log" 2>&1 || status=$?
  grep -v "^WARNING: Location" "$log" || true
  rm -f "$log"
  return "$status"
}
extras="dev"
vision=0
for arg in "$@"; do
  case "$arg" in
    --vision) vision=1 ;;
    *) echo "usage: ./setup.sh [--vision]" >&2; exit 2 ;;
  esac
done
if [ "$vision" = 1 ]; then
  # A plain `pip install torchvision` beside another torch pulls a mismatched (CUDA) torch, so
  # the pair is installed first, before `pip install -e` sees the `vision` extra.
  case "$(uname -m)" in
    aarch64|arm64) pair="torch==2.9.1 torchvision==0.24.1" ;;
    *) pair="torch==2.14.1 torchvision==0.29.1" ;;
  esac
  .venv/bin/python -c "import torchvision" 2>/dev/null || pip install -q $pair
  extras="${extras},vision"
fi
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  extras="${extras},cuda"
else
  .venv/bin/python -c "import torch" 2>/dev/null || pip install -q torch==2.13.0
fi
pip install -q -e ".[${extras}]"
.venv/bin/python -c "import search, torch, onnxruntime; print('setup ok: torch', torch.__version__, '| onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())"
