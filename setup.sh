#!/usr/bin/env bash
# Sets up .venv with everything `search` needs. Idempotent: a second run is quick.
# Where no NVIDIA GPU is present it installs the CPU build of torch first, so pip does not pull
# a multi-GB CUDA build; where one is present it adds onnxruntime-gpu (the `cuda` extra).
# `./setup.sh --vision` adds torchvision (the `vision` extra, for torchvision models and the
# image tests), pinned to a torch/torchvision pair that works together on this architecture.
# `./setup.sh --target openvino|qnn` also makes that target's runtime: a venv of its own under
# .runtimes/<target>/ (git-ignored) holding the ONNX Runtime build that has the target's
# execution provider, numpy, onnx, pyyaml and this checkout (a .pth file; no torch). A study on
# the target's profile starts its measurement agent from there and stops it at the end
# (docs/targets.md). It needs its own venv: onnxruntime-openvino *is* the `onnxruntime` module.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
# pip's index here warns about every missing local mirror folder; keep the real messages only.
# $PY is the interpreter whose pip runs.
PY=.venv/bin/python
pip() {
  local log status=0
  log=$(mktemp)
  "$PY" -m pip "$@" >"$log" 2>&1 || status=$?
  grep -v "^WARNING: Location" "$log" || true
  rm -f "$log"
  return "$status"
}
usage="usage: ./setup.sh [--vision] [--target openvino|qnn]"
vision=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --vision) vision=1 ;;
    --target)
      [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }
      case "$2" in
        openvino|qnn) targets+=("$2") ;;
        *) echo "unknown target '$2': choose openvino or qnn ($usage)" >&2; exit 2 ;;
      esac
      shift ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
  shift
done

main_setup() {
  extras="dev"
  if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
  fi
  if [ "$vision" = 1 ]; then
    # A plain `pip install torchvision` beside another torch pulls a mismatched (CUDA) torch,
    # so the pair is installed first, before `pip install -e` sees the `vision` extra.
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
}

# The runtime of one target. Pins: onnxruntime-openvino 1.24.1 bundles OpenVINO 2025.4.1, and
# the kernel audit reads its compiled blobs with the `openvino` package of exactly that release
# (the blob format is tied to it); the two cannot share one process (two libopenvino builds with
# different C++ ABIs), so the audit runs the reader in a child process. onnxruntime-qnn 2.7.0 is
# a plugin for the standard onnxruntime wheel; ONNX Runtime 1.31+ accepts the plugin's name in
# `providers=` (1.24 falls back to the CPU provider silently).
target_setup() {
  local name=$1 dir=.runtimes/$1 pkgs check
  case "$name" in
    openvino)
      pkgs="onnxruntime-openvino==1.24.1 openvino==2025.4.1 onnx pyyaml"
      check="import onnxruntime as o; assert 'OpenVINOExecutionProvider' in o.get_available_providers(), o.get_available_providers(); print(o.__version__)" ;;
    qnn)
      [ "$(uname -m)" = x86_64 ] && [ "$(uname -s)" = Linux ] || {
        echo "the qnn target (Qualcomm's HTP simulator) needs Linux on x86-64" >&2; exit 2; }
      pkgs="onnxruntime>=1.31 onnxruntime-qnn==2.7.0 onnx pyyaml"
      check="import onnxruntime as o, onnxruntime_qnn as q; print(o.__version__, 'qnn', q.__version__)" ;;
  esac
  if [ ! -x "$dir/bin/python" ]; then
    "$PYTHON" -m venv "$dir"
  fi
  PY=$dir/bin/python
  # This checkout's package on the runtime's path without its dependencies (no torch there):
  # a folder holding only a link to search/, so pip does not see the checkout's egg-info and
  # complain about requirements this runtime does not need.
  site=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  mkdir -p "$dir/checkout"
  ln -sfn "$PWD/search" "$dir/checkout/search"
  echo "$PWD/$dir/checkout" > "$site/search-checkout.pth"
  if ! "$PY" -c "$check" >/dev/null 2>&1; then
    pip install -q $pkgs
  fi
  version=$("$PY" -c "$check")
  if [ "$name" = openvino ]; then  # the audit's reader, in a process of its own
    version="$version | openvino $("$PY" -c 'import openvino; print(openvino.get_version())')"
  fi
  echo "target $name ok: $dir | onnxruntime $version"
  PY=.venv/bin/python
}

if [ ${#targets[@]} -eq 0 ] || [ "$vision" = 1 ] || ! .venv/bin/python -c "import search, torch" 2>/dev/null; then
  main_setup
fi
for t in ${targets[@]+"${targets[@]}"}; do
  target_setup "$t"
done
