#!/usr/bin/env bash
# One digits trial as the README's first command runs it (`run --hw cpu --trials 1`) in a new
# study, with the teacher taken from TEACHERS (train it once with any digits run), so that two
# thread settings can be timed against each other as whole processes, in turn (README, "Threads
# on a busy machine"):
#
#   benchmarks/threads_trial.sh                     # default threads; teacher from results/teachers
#   TEACHERS=DIR benchmarks/threads_trial.sh --threads 1
#
# e.g. /usr/bin/time -f %e for each, alternating A B A B; loaded: two `sh -c 'while :; do :;
# done'` beside it. Extra arguments go to `search run`. Prints the threads line it saw.
set -euo pipefail
cd "$(dirname "$0")/.."
TEACHERS=${TEACHERS:-results/teachers}
[ -d "$TEACHERS" ] || { echo "no teacher cache at $TEACHERS: set TEACHERS" >&2; exit 2; }
work=$(mktemp -d "${TMPDIR:-/tmp}/threads-trial.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/teachers" && cp -r "$TEACHERS/." "$work/teachers/"
.venv/bin/python -m search run --hw cpu --trials 1 --results-dir "$work" --no-progress "$@" \
  > "$work/log" 2>&1
grep -h '^threads:' "$work/log" || echo "threads: as given ($*)"
