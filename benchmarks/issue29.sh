#!/usr/bin/env bash
# Every measurement issue 29 reports, in sequence, on an otherwise quiet machine:
#
#   1. the bench per task and target (mobilenet_digits, distorted_digits; cpu, and openvino where
#      that profile exists), each with its wall time;
#   2. which co-runner moves a paired ratio (benchmarks/corunners.py);
#   3. a study beside two training co-runners, re-confirmed quietly (benchmarks/corunner_study.py);
#   4. an hour after each bench (and after the co-runner study's confirmation), the same
#      candidates timed again in new processes (bench --reconfirm; report --confirm);
#   5. docs/bench.md from the benches.
#
#   bash benchmarks/issue29.sh                  # the full run (see README, "Benchmark")
#   TINY=1 bash benchmarks/issue29.sh           # a smoke run of the same steps (~1 h loaded)
#   HW="cpu openvino" bash benchmarks/issue29.sh
#
# Everything goes to $OUT (results/issue29); the log with start and end times to $OUT/run.log.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
OUT=${OUT:-results/issue29}
HW=${HW:-"cpu openvino"}  # openvino: ./setup.sh --target openvino first
TASKS=${TASKS:-"mobilenet_digits distorted_digits"}
N=${N:-12}
SEEDS=${SEEDS:-3}
LATER=${LATER:-3600}
export OMP_NUM_THREADS=1  # one torch thread: on 2 cores two threads ran slower (README)

BENCH_ARGS=(--trials "$N" --seeds "$SEEDS" --samplers tpe:global --quiet-wait 900)
CORUNNER_ARGS=(--reps 3 --processes 3 --rounds 30)
STUDY_ARGS=(--task mobilenet_digits --trials 4 --quiet-wait 600)
if [[ -n "${TINY:-}" ]]; then
  TASKS=${TINY_TASKS:-tests.tiny_task:make_task}
  BENCH_ARGS=(--quick --samplers tpe:global)
  CORUNNER_ARGS=(--reps 1 --processes 3 --rounds 5 --conditions quiet,train)
  STUDY_ARGS=(--task tests.tiny_task:make_task --trials 2 --quiet-wait 60 --reconfirms 1)
  LATER=${LATER_TINY:-120}
fi

mkdir -p "$OUT/bench"
log() { echo "[$(date '+%F %T')] $*" | tee -a "$OUT/run.log"; }
log "start: HW=$HW TASKS=$TASKS N=$N SEEDS=$SEEDS LATER=$LATER TINY=${TINY:-}; load $(cut -d' ' -f1-3 /proc/loadavg)"

declare -A ENDED
for hw in $HW; do
  if [[ ! -f "hw_profiles/$hw.yaml" && ! -f "$hw" ]]; then
    log "skip target $hw: no hw_profiles/$hw.yaml in this checkout"
    continue
  fi
  for task in $TASKS; do
    slug=${task//[:.\/]/-}
    dir="$OUT/bench/$slug-$hw"
    log "bench $task on $hw: $PY -m search bench --hw $hw --task $task ${BENCH_ARGS[*]} --out $dir"
    t0=$(date +%s)
    $PY -m search bench --hw "$hw" --task "$task" "${BENCH_ARGS[@]}" --out "$dir" \
      > "$dir.log" 2>&1 || { log "bench $task on $hw FAILED (see $dir.log)"; continue; }
    ENDED[$dir]=$(date +%s)
    log "bench $task on $hw done in $(( (ENDED[$dir] - t0) / 60 )) min"
  done
done

log "co-runners: $PY benchmarks/corunners.py ${CORUNNER_ARGS[*]} --out $OUT/corunners"
$PY benchmarks/corunners.py "${CORUNNER_ARGS[@]}" --out "$OUT/corunners" > "$OUT/corunners.log" 2>&1 \
  && log "co-runners done" || log "co-runners FAILED (see $OUT/corunners.log)"

log "co-runner study: $PY benchmarks/corunner_study.py ${STUDY_ARGS[*]} --out $OUT/corunner-study"
$PY benchmarks/corunner_study.py "${STUDY_ARGS[@]}" --out "$OUT/corunner-study" \
  > "$OUT/corunner-study.log" 2>&1 && log "co-runner study done" \
  || log "co-runner study FAILED (see $OUT/corunner-study.log)"

for dir in "${!ENDED[@]}"; do
  wait_s=$(( ENDED[$dir] + LATER - $(date +%s) ))
  if (( wait_s > 0 )); then log "waiting $(( wait_s / 60 )) min to re-confirm $dir"; sleep "$wait_s"; fi
  log "re-confirm $dir: $PY -m search bench --reconfirm $dir --quiet-wait 900"
  $PY -m search bench --reconfirm "$dir" --quiet-wait 900 2>&1 | tee -a "$OUT/run.log" \
    || log "re-confirm $dir FAILED"
done

log "later look at the co-runner study: $PY benchmarks/corunner_study.py ${STUDY_ARGS[*]} --later $LATER"
$PY benchmarks/corunner_study.py "${STUDY_ARGS[@]}" --later "$LATER" --out "$OUT/corunner-study" \
  >> "$OUT/corunner-study.log" 2>&1 && log "later look done" || log "later look FAILED"

if [[ -z "${TINY:-}" ]]; then
  $PY benchmarks/bench_docs.py "$OUT"/bench/*/ | tee -a "$OUT/run.log"
fi
log "end; load $(cut -d' ' -f1-3 /proc/loadavg)"
