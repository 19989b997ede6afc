#!/usr/bin/env bash
# Runs the whole test suite several times in a row on a clean clone, with CPU hogs beside it, and sums up each run:
# the check that the suite holds on a busy machine (a test that passes only on an idle machine is a defect).
#
#   scripts/loaded-test-runs.sh [runs=5] [hogs=2]
#
# The clone is made from this checkout's HEAD (commit first: uncommitted changes are not in it) into a new folder
# beside this checkout, as CI's clone is (the example configs name ../shared by relative paths); `npm ci` runs once, then `npm test` `runs` times while `hogs` busy loops (one node process each) compete for
# the CPU. Each run's output goes to <clone>/run-N.log; the summary (one line a run: passed/failed, the counts and the
# failing tests' names) goes to stdout. Exits 0 only when every run passed. The hogs are killed on any exit.
set -euo pipefail

runs=${1:-5}
hogs=${2:-2}
source_repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
clone=$(mktemp -d "$(dirname "$source_repo")/telematics-loaded-XXXXXX")
hog_pids=()
stop_hogs() {
  for pid in "${hog_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap stop_hogs EXIT

# The clone is not beside ../shared: point the tests at this checkout's shared test data (unless told otherwise).
if [ -z "${TELEMATICS_SHARED_TESTDATA:-}" ] && [ -d "$source_repo/../shared/testdata" ]; then
  export TELEMATICS_SHARED_TESTDATA
  TELEMATICS_SHARED_TESTDATA=$(cd "$source_repo/../shared/testdata" && pwd)
fi

git clone -q "$source_repo" "$clone"
cd "$clone"
echo "clone of $(git rev-parse --short HEAD) in $clone; npm ci ..." >&2
npm ci --no-audit --no-fund >"$clone/npm-ci.log" 2>&1 || { echo "npm ci failed: $clone/npm-ci.log" >&2; exit 1; }

for _ in $(seq "$hogs"); do
  node -e 'for (;;) {}' &
  hog_pids+=($!)
done

failed=0
for n in $(seq "$runs"); do
  start=$(date +%s)
  if npm test >"$clone/run-$n.log" 2>&1; then status=passed; else status=FAILED; failed=$((failed + 1)); fi
  took=$(($(date +%s) - start))
  counts=$(grep -E '^ℹ (tests|pass|fail|skipped) ' "$clone/run-$n.log" | awk '{printf "%s %s ", $2, $3}')
  echo "run $n: $status in ${took} s: ${counts:-no test summary (see run-$n.log)}"
  # The failing tests' names, from the reporter's list at the end.
  if [ "$status" = FAILED ]; then
    sed -n '/^✖ failing tests:/,$p' "$clone/run-$n.log" | grep -E '^✖ ' | grep -v 'failing tests' | sed 's/^/    /' || true
  fi
done
echo "$((runs - failed)) of $runs runs passed, with $hogs CPU hogs beside them; logs in $clone"
[ "$failed" -eq 0 ]
