#!/usr/bin/env bash
# Sets up .venv with everything `search` needs. Idempotent: a second run is quick.
# Where no NVIDIA GPU is present it installs the CPU build of torch first, so pip does not pull
# a multi-GB CUDA build; where one is present it adds onnxruntime-gpu (the `cuda` extra).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
pip() { .venv/bin/python -m pip "$@"; }
extras="dev"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  extras="dev,cuda"
else
  .venv/bin/python -c "import torch" 2>/dev/null || pip install -q torch==2.13.0
fi
pip install -q -e ".[${extras}]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import search, torch, onnxruntime; print('setup ok: torch', torch.__version__, '| onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())"
