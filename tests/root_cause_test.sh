# launch/root_cause.jq on hand-written flight records: the cases a real hang
# reaches only by timing (a stopped rank that wakes late), made certain.
# Usage: root_cause_test.sh ROOT_CAUSE_JQ
set -uo pipefail
source "$(dirname "$0")/script_lib.sh"
program=$1

record() {  # RANK REASON STARTED [DID_NOT_ANSWER]: rank-RANK.json with one channel
  printf '{"rank": %d, "host": "node%d", "reason": "%s", "did_not_answer": [%s],
    "channels": [{"channel": "dp(stage 0)", "started": %d, "completed": %d}]}\n' \
    "$1" "$1" "$2" "${4:-}" "$3" "$(($3 - 1))" > "$dir/rank-$1.json"
}
cause() { jq -rs --argjson world 3 --arg dir "$dir" -f "$program" "$dir"/rank-*.json; }

# A rank stopped, woken by mpirun's teardown: its record is ahead of the others'.
dir=$root/woke_late && mkdir -p "$dir"
record 0 "HANG: allreduce #25 ... ranks {2} never arrived" 25 2
record 1 "asked by rank 0: allreduce #25 did not complete within 10.0 s" 25
record 2 "asked by rank 0: allreduce #25 did not complete within 10.0 s" 31
out=$(cause)
grep -q "rank 2 did not answer the survey of rank 0: stopped or stuck" <<< "$out" || fail "rank 2 not blamed: $out"
! grep -q "is behind" <<< "$out" || fail "a late rank's counts made another look behind: $out"
grep -q "victims: 0$" <<< "$out" || fail "rank 0 not a victim: $out"
pass "a rank that did not answer the survey is the cause, whatever its later record says"

# A rank that is behind on a channel, and a rank with no record at all.
dir=$root/behind && mkdir -p "$dir"
record 0 "HANG: allreduce #25 ... never arrived" 25
record 1 "asked by rank 0: allreduce #25 did not complete" 24
out=$(cause)
grep -q "no flight record from ranks 2: dead or stopped" <<< "$out" || fail "the silent rank 2 not named: $out"
grep -q "rank 1 (node1) is behind on dp(stage 0): started 24 operations, others 25" <<< "$out" || fail "rank 1 not behind: $out"
! grep -q "did not answer" <<< "$out" || fail "no survey went unanswered: $out"
pass "no record, and behind on a channel"

# Every rank answered and none is behind: the report says to read the logs.
dir=$root/even && mkdir -p "$dir"
for r in 0 1 2; do record "$r" "an error on rank $r" 7; done
out=$(cause)
grep -q "every rank wrote a record and none is behind" <<< "$out" || fail "no 'see the logs' line: $out"
grep -q "victims: none$" <<< "$out" || fail "victims named without a timeout: $out"
pass "nothing to blame: the logs"

# Records written before did_not_answer existed still read.
dir=$root/old && mkdir -p "$dir"
for r in 0 1 2; do record "$r" "x" 3; done
sed -i 's/"did_not_answer": \[\],//' "$dir"/rank-*.json
! grep -q did_not_answer "$dir"/rank-*.json || fail "the older records still carry did_not_answer"
out=$(cause) || fail "older records do not read: $out"
grep -q "none is behind" <<< "$out" || fail "older records: $out"
pass "records without did_not_answer"
echo "root_cause: $passed checks passed"
