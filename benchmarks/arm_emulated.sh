#!/usr/bin/env bash
# ARM (aarch64) under qemu-user emulation, end to end: build an arm64 Debian root with the
# aarch64 onnxruntime wheel and this checkout's `search` package, start the measurement agent in
# it, run a short study of the tiny test task against it (--hw arm --agent), then set what the
# agent measured (its kernel audit and accuracy per trial) against the same files on this x86
# machine. Prints one line per step with the elapsed time.
#
#   sudo benchmarks/arm_emulated.sh                      # QEMU_CPU=cortex-a76 (dot product)
#   QEMU_CPU=cortex-a72 benchmarks/arm_emulated.sh       # no dot product; max: i8mm, SVE2
#
# Emulated time is NOT latency (qemu-user runs guest code 36-550x slower, unevenly by
# instruction mix): the study records its timings as emulated and ranks nothing by them. What
# this checks is install, protocol, the kernels ONNX Runtime picks on aarch64 and accuracy.
# Needs root (mmdebstrap, binfmt_misc, chroot) and a first build of 5-30 minutes (a loaded
# 2-core machine took 26 minutes; later runs reuse the root). Not run in CI.
#
# Environment: ROOT (default .runtimes/arm64-root), PORT (18765), QEMU_CPU (cortex-a76),
# TRIALS (2), STUDY (arm-emulated), RESULTS (results/arm-emulated).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${ROOT:-$PWD/.runtimes/arm64-root}
PORT=${PORT:-18765}
export QEMU_CPU=${QEMU_CPU:-cortex-a76}
TRIALS=${TRIALS:-2}
STUDY=${STUDY:-arm-emulated}
RESULTS=${RESULTS:-results/arm-emulated}
PY=.venv/bin/python
[ -x "$PY" ] || { echo "run ./setup.sh first (no .venv)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "arm_emulated.sh needs root (mmdebstrap, chroot)" >&2; exit 2; }

T0=$(date +%s)
step_t=$T0
log() {
  local now
  now=$(date +%s)
  printf '[%5ds +%4ds] %s\n' $((now - T0)) $((now - step_t)) "$*"
  step_t=$now
}

benchmarks/arm/build_root.sh "$ROOT" | sed 's/^/  build: /'
log "arm64 root ready: $ROOT"

work=$(mktemp -d)
chmod 700 "$work"
agent=""
cleanup() {
  if [ -n "$agent" ]; then
    kill "$agent" 2>/dev/null || true
    wait "$agent" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
token=$("$PY" -c 'import secrets; print(secrets.token_urlsafe(32))')
(umask 077 && printf '%s\n' "$token" >"$work/token")
# The token goes in a file bind-mounted into the root: a command-line word would show in ps.
ROOT_BIND="$work:/agent" benchmarks/arm/run_in_root.sh "$ROOT" \
  python -m search agent --host 127.0.0.1 --port "$PORT" --token-file /agent/token \
  --describe "qemu-user, QEMU_CPU=$QEMU_CPU" >"$work/agent.log" 2>&1 &
agent=$!
for _ in $(seq 600); do
  grep -q "agent listening" "$work/agent.log" 2>/dev/null && break
  kill -0 "$agent" 2>/dev/null || { cat "$work/agent.log" >&2; exit 1; }
  sleep 0.5
done
grep -q "agent listening" "$work/agent.log" || { echo "the agent did not start" >&2; exit 1; }
log "agent: $(grep 'agent listening' "$work/agent.log")"

SEARCH_AGENT_TOKEN=$token "$PY" -m search run --hw arm --agent "http://127.0.0.1:$PORT" \
  --task tests.tiny_task:make_task --space tests/data/tiny_space.yaml --trials "$TRIALS" \
  --study "$STUDY" --results-dir "$RESULTS" --no-progress
log "study $STUDY: $TRIALS trial(s) measured on the emulated arm64 agent"

"$PY" benchmarks/arm/compare_x86.py --study "$STUDY" --results-dir "$RESULTS"
log "compared with x86; total $(($(date +%s) - T0)) s"
