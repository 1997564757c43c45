# Sourced by the shell tests that start real jobs: a temporary folder ($root)
# removed at exit together with everything started from it, pass/fail
# counting, and a bounded wait for a log line.

root=$(mktemp -d)
pids=()
# Everything the test started names $root on its command line: mpirun outlives a killed launcher.
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2> /dev/null; done; pkill -9 -f "$root/" 2> /dev/null; rm -rf "$root"; }
trap cleanup EXIT
# A failure also shows the ranks' last log lines: the folder goes with the test.
fail() {
  echo "FAIL: $*"
  local log
  find "$root" -name 'rank-*.log' 2> /dev/null | sort | head -8 | while IFS= read -r log; do
    echo "--- the last lines of $log:"
    tail -n 15 "$log"
  done
  exit 1
}
passed=0
pass() { echo "ok: $*"; passed=$((passed + 1)); }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

wait_for() {  # FILE PATTERN: until a line of FILE matches (at most 120 s)
  for _ in $(seq 2400); do
    grep -qE -- "$2" "$1" 2> /dev/null && return 0
    sleep 0.05  # polls until the line appears (bounded above)
  done
  fail "waited 120 s for /$2/ in $1"
}
