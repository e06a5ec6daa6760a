#!/usr/bin/env bash
# Does the best compressed model depend on where it runs? The same task, space and budget on
# several targets and seeds, then each target's winner measured on every target
# (python -m search compare; docs/targets.md). Needs a quiet machine: every study times latency,
# and the comparison times the winners of all targets in one window per target.
#
#   ./setup.sh --target openvino
#   benchmarks/cross_target.sh                          # digits, default space, 20 trials, 3 seeds
#   TRIALS=2 SEEDS="0 1" TASK=tests.tiny_task:make_task SPACE=tests/data/tiny_space.yaml \
#       RESULTS=results/cross-tiny benchmarks/cross_target.sh        # a quick check of the plumbing
#
# Environment: TASK (digits), SPACE (default), TRIALS (20), SEEDS ("0 1 2"), TARGETS
# ("cpu openvino"), PICK (knee), RESULTS (results/cross-target). A study already complete is
# resumed (nothing to do), so a rerun only does what is missing. Prints each step's time.
set -euo pipefail
cd "$(dirname "$0")/.."
TASK=${TASK:-digits}
SPACE=${SPACE:-default}
TRIALS=${TRIALS:-20}
SEEDS=${SEEDS:-0 1 2}
TARGETS=${TARGETS:-cpu openvino}
PICK=${PICK:-knee}
RESULTS=${RESULTS:-results/cross-target}
PY=.venv/bin/python
[ -x "$PY" ] || { echo "run ./setup.sh first (no .venv)" >&2; exit 2; }
slug=$(echo "$TASK" | tr -c 'A-Za-z0-9\n' '-' | sed 's/-*$//')

T0=$(date +%s)
step_t=$T0
log() {
  local now
  now=$(date +%s)
  printf '[%6ds +%5ds] %s\n' $((now - T0)) $((now - step_t)) "$*"
  step_t=$now
}

studies=()
for seed in $SEEDS; do
  for hw in $TARGETS; do
    name="$slug-$hw-s$seed"
    "$PY" -m search run --hw "$hw" --task "$TASK" --space "$SPACE" --trials "$TRIALS" \
      --seed "$seed" --study "$name" --results-dir "$RESULTS" --no-progress
    log "study $name: $TRIALS trial(s) on $hw, seed $seed"
    studies+=(--study "$name")
  done
done
"$PY" -m search compare "${studies[@]}" --pick "$PICK" --results-dir "$RESULTS" \
  --out "$RESULTS/compare"
log "compared: $RESULTS/compare/compare.md; total $(($(date +%s) - T0)) s"
