#!/usr/bin/env bash
# vlm-launch with real ranks under mpirun: per-rank logs and the console tee,
# scrape targets, metrics.jsonl and vlm-report, a rank killed mid-run and the restart from the
# latest checkpoint, a hang whose cause the failure report takes from the
# flight records, SIGTERM during a save slower than mpirun's 2 s grace, stop
# signals to every process of the job and --grace, the
# restart budget, usage errors. Every wait is for an event, with a bound.
# usage: launch_test.sh VLM_LAUNCH VLM_TRAIN VLM_CKPT CONFIG SLOW_IO_SHIM
set -uo pipefail
launch=$1 train=$2 ckpt=$3 config=$4 shim=$5
report=$(dirname "$launch")/vlm-report
source "$(dirname "$0")/script_lib.sh"
wait_exit() {  # PID: its exit code (at most 180 s, then killed)
  for _ in $(seq 3600); do
    kill -0 "$1" 2> /dev/null || break
    sleep 0.05  # polls until the process ends (bounded above)
  done
  kill -0 "$1" 2> /dev/null && { kill -9 "$1"; fail "pid $1 still running after 180 s"; }
  wait "$1"
}
tiny=(--config "$config" --set metrics.enabled=true --set metrics.port_base=0 --set loop.log_every=10)

# 1. A finished run: logs, tee, targets, metrics.jsonl, resume-if-present.
dir=$root/ok
"$launch" --nproc-per-node 2 --run-dir "$dir/run" -- "$train" "${tiny[@]}" --set checkpoint.dir="$dir/ckpt" \
  > "$dir.out" 2>&1 || fail "a plain run failed: $(tail -20 "$dir.out")"
grep -q '^\[rank 0\] step 30/30' "$dir.out" || fail "rank 0's lines are not on the console with a prefix"
grep -q '^\[rank 1\]' "$dir.out" && fail "rank 1 was teed without --tee"
for r in 0 1; do
  grep -q "compute threads" "$dir/run/attempt-0/rank-$r.log" || fail "no log for rank $r"
done
grep -q "step 30/30" "$dir/run/attempt-0/rank-0.log" || fail "rank 0's log lacks its steps"
for r in 0 1; do  # the targets the launcher wrote while the ranks ran
  port=$(sed -nE 's/.*metrics on http:\/\/[^:]+:([0-9]+)\/metrics.*/\1/p' "$dir/run/attempt-0/rank-$r.log")
  grep -qE "scrape targets: .*rank $r [^,]+:$port(,|$)" "$dir/run/launch.log" ||
    fail "the targets lacked rank $r's port $port: $(grep 'scrape targets' "$dir/run/launch.log")"
done
[[ $(jq length "$dir/run/targets.json") == 0 ]] || fail "a finished run left scrape targets: $(cat "$dir/run/targets.json")"
[[ $(wc -l < "$dir/run/metrics.jsonl") == 3 ]] || fail "metrics.jsonl should have 3 lines (steps 10, 20, 30)"
jq -e 'select(.step == 30) | .loss > 0' "$dir/run/metrics.jsonl" > /dev/null || fail "metrics.jsonl has no loss at step 30"
grep -q "starting fresh" "$dir/run/attempt-0/rank-0.log" || fail "--resume auto did not start fresh"
"$launch" --nproc-per-node 2 --tee all --run-dir "$dir/run2" -- "$train" "${tiny[@]}" --set loop.steps=40 \
  --set checkpoint.dir="$dir/ckpt" > "$dir.out2" 2>&1 || fail "the continued run failed: $(tail -20 "$dir.out2")"
grep -q '^\[rank 1\]' "$dir.out2" || fail "--tee all did not show rank 1"
grep -q "resumed from $dir/ckpt/step-00000030 at step 30" "$dir/run2/attempt-0/rank-0.log" || fail "--resume auto did not resume"
# A fresh run in a used run dir keeps the earlier steps in metrics-1.jsonl; a resumed one appends.
"$train" "${tiny[@]}" --set run.dir="$dir/run2" --set checkpoint.dir="$dir/ckpt3" --set loop.steps=10 > "$dir.out3" 2>&1 &&
  "$train" "${tiny[@]}" --set run.dir="$dir/run2" --set checkpoint.dir="$dir/ckpt3" --set loop.steps=20 --resume auto \
    >> "$dir.out3" 2>&1 || fail "the runs in a used run dir failed: $(tail -20 "$dir.out3")"
[[ $(jq -s -c 'map(.step)' "$dir/run2/metrics-1.jsonl") == "[40]" && $(jq -s -c 'map(.step)' "$dir/run2/metrics.jsonl") == "[10,20]" &&
  ! -e $dir/run2/metrics-2.jsonl ]] || fail "metrics.jsonl of a fresh and a resumed run: $(head "$dir"/run2/metrics*.jsonl)"
pass "a 2-rank run: per-rank logs, [rank r] tee, targets.json with each rank's port, metrics.jsonl (a fresh run starts a new one), --resume auto"

# vlm-report draws metrics.jsonl: a valid PNG of the stated size with curves, an SVG with them.
"$report" "$dir/run" > "$dir.report" 2>&1 || fail "vlm-report failed: $(cat "$dir.report")"
grep -q "steps logged: 3 (steps 10 to 30)" "$dir.report" || fail "no summary: $(cat "$dir.report")"
png=$dir/run/report.png
[[ $(head -c 8 "$png" | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]] || fail "$png is not a PNG"
size=$(od -An -tu1 -j16 -N8 "$png" | awk '{ print ($3 * 256 + $4) "x" ($7 * 256 + $8) }')
[[ $size == 1200x900 ]] || fail "$png is $size, not 1200x900"
(($(stat -c %s "$png") > 20000)) || fail "$png is too small to hold three curves"
"$report" "$dir/run" --format svg --output "$dir/report.svg" > /dev/null || fail "vlm-report --format svg failed"
(($(grep -c '<path' "$dir/report.svg") >= 3)) || fail "the SVG has no curves"
odd="$root/it's a \"run\" \$x_y"  # a quote, double quotes, a dollar: the paths reach gnuplot intact
mkdir -p "$odd" && cp "$dir/run/metrics.jsonl" "$odd/"
echo '{"step": 40, "loss": "abc", "samples_per_second": "x", "time": 1}' >> "$odd/metrics.jsonl"  # not numbers: missing
"$report" "$odd" > "$dir.report" 2>&1 && [[ -s $odd/report.png ]] || fail "vlm-report on $odd: $(cat "$dir.report")"
grep -q "non-finite or skipped logged steps: 1" "$dir.report" || fail "the line of non-numbers: $(cat "$dir.report")"
"$report" "$odd" --output "$odd/metrics.jsonl" > "$dir.report" 2>&1
(($? == 2)) && grep -q "is the metrics.jsonl it draws" "$dir.report" && (($(wc -l < "$odd/metrics.jsonl") == 4)) ||
  fail "--output over metrics.jsonl: $(cat "$dir.report")"
"$report" "$root/nowhere" > "$dir.report" 2>&1
(($? == 2)) && grep -q "metrics.jsonl is missing" "$dir.report" || fail "a missing run dir is not a clear error"
pass "vlm-report: a 1200x900 PNG and an SVG of the curves, a summary, any characters in the path; a clear error for a missing run"

# 2. A rank killed mid-run: the report names it; the restart resumes and finishes.
dir=$root/kill
"$launch" --nproc-per-node 2 --max-restarts 1 --restart-backoff 1 --run-dir "$dir/run" -- "$train" "${tiny[@]}" \
  --set loop.steps=300 --set checkpoint.dir="$dir/ckpt" --set checkpoint.every_steps=10 > "$dir.out" 2>&1 &
pid=$!
pids+=("$pid")
wait_for "$dir/ckpt/latest" "step-"
wait_for "$dir/run/attempt-0/rank-1.log" "^vlm-rank: rank 1 on"
victim=$(sed -nE '1s/.* pid ([0-9]+) .*/\1/p' "$dir/run/attempt-0/rank-1.log")
kill -9 "$victim" || fail "rank 1 (pid $victim) was not running"
wait_exit "$pid" || fail "the restarted job did not finish: $(tail -30 "$dir.out")"
grep -q "first to fail: rank 1 on $(hostname): killed by signal 9" "$dir/run/attempt-0/failure.txt" ||
  fail "the report does not name rank 1 and signal 9: $(cat "$dir/run/attempt-0/failure.txt")"
grep -q "last lines of" "$dir/run/attempt-0/failure.txt" || fail "the report has no log tail"
grep -q "resumed from $dir/ckpt/step-" "$dir/run/attempt-1/rank-0.log" || fail "attempt 1 did not resume"
grep -q "step 300/300" "$dir/run/attempt-1/rank-0.log" || fail "attempt 1 did not finish"
grep -q "summary: 1 of 1 restarts used" "$dir.out" || fail "no summary: $(tail "$dir.out")"
port=$(sed -nE 's/.*metrics on http:\/\/[^:]+:([0-9]+)\/metrics.*/\1/p' "$dir/run/attempt-1/rank-0.log")
grep -qE "scrape targets: rank 0 [^,]+:$port," "$dir/run/launch.log" ||
  fail "targets.json was not updated with the restarted rank 0's port $port: $(grep 'scrape targets' "$dir/run/launch.log")"
"$ckpt" verify "$dir/ckpt/latest" > /dev/null || fail "the final checkpoint does not verify"
pass "kill -9 of rank 1: reported (rank, host, signal, log tail), restarted from the latest checkpoint with new targets, finished"

# 3. A hang: the rank that timed out first is a victim; the records name the cause.
dir=$root/hang
VLM_FAULT=stop:step:1:5 "$launch" --nproc-per-node 2 --run-dir "$dir/run" -- "$train" "${tiny[@]}" \
  --set comm.timeout_seconds=10 > "$dir.out" 2>&1 &
pid=$!
pids+=("$pid")
wait_exit "$pid"
rc=$?
((rc == 1)) || fail "a hung job should end with 1, got $rc: $(tail "$dir.out")"
report=$(cat "$dir/run/attempt-0/failure.txt")
grep -qE "no flight record from ranks 1|rank 1 did not answer the survey of rank 0|rank 1 \(.*\) is behind on dp" <<< "$report" || fail "the report does not blame rank 1: $report"
grep -q "first to fail: rank 0 on .*MPI_Abort" <<< "$report" || fail "the report does not say rank 0 ended the job: $report"
grep -q "victims: 0" <<< "$report" || fail "the report does not call rank 0 a victim: $report"
grep -q "hang report: .*ranks {1} never arrived" <<< "$report" || fail "no hang report line: $report"
pass "a stopped rank: root cause rank 1 from the flight records, rank 0 a victim"

# 4. SIGTERM to the launcher while the save takes 4 s (mpirun alone kills after ~2 s).
dir=$root/term
LD_PRELOAD=$shim VLM_SLOW_FSYNC="shard-:4" "$launch" --nproc-per-node 2 --run-dir "$dir/run" -- "$train" \
  "${tiny[@]}" --set loop.steps=100000 --set checkpoint.dir="$dir/ckpt" > "$dir.out" 2>&1 &
pid=$!
pids+=("$pid")
wait_for "$dir/run/attempt-0/rank-0.log" "step 20/"
wait_for "$dir/run/launch.log" "scrape targets: rank 0 .*, rank 1 "
[[ $(jq length "$dir/run/targets.json") == 2 ]] || fail "a running job's targets.json does not list 2 ranks: $(cat "$dir/run/targets.json")"
signalled=$SECONDS
kill -TERM "$pid"
kill -USR1 "$pid"  # a second stop signal (a scheduler's, scancel --full) must not cut the save short
wait_exit "$pid"
rc=$?
((rc == 75)) || fail "SIGTERM during a slow save should exit 75 (preempted, saved), got $rc: $(tail -20 "$dir.out")"
((SECONDS - signalled >= 4)) || fail "the save was not slow: the test proves nothing"
"$ckpt" verify "$dir/ckpt/latest" > /dev/null || fail "no verified checkpoint after SIGTERM"
# Both signals are pending when bash runs its traps, which it does in signal-number order: USR1 (10) may come first.
grep -qE "stopped by SIG(TERM|USR1) .* checkpoint saved" "$dir.out" || fail "no summary line for the stop: $(tail "$dir.out")"
pass "SIGTERM then SIGUSR1 during a $((SECONDS - signalled)) s save: a verified checkpoint and exit code 75"

# 5. Stop signals as `scancel --full` sends them: to every process of the job at
# once, and to the launcher twice. Bash 5.2 lost track of the attempt here
# about one time in four; ten rounds. Then --grace: ranks that ignore the stop
# signal get TERM after it.
dir=$root/stops
worker=(bash -c 'trap "exit 0" USR1; echo up; while :; do sleep 0.05; done')
for round in $(seq 10); do
  setsid "$launch" --nproc-per-node 2 --run-dir "$dir/run-$round" -- "${worker[@]}" > "$dir-$round.out" 2>&1 &
  pid=$!
  pids+=("$pid")
  wait_for "$dir-$round.out" "\[rank 0\] up"  # both ranks' traps are set: a USR1 before would kill them
  wait_for "$dir/run-$round/attempt-0/rank-1.log" "^up"
  kill -USR1 -- "-$pid"
  kill -USR1 "$pid"
  wait_exit "$pid"
  rc=$?
  ((rc == 75)) || fail "round $round: USR1 to every process should end the launcher with 75, got $rc: $(tail "$dir-$round.out")"
done
stubborn=(bash -c 'trap "" USR1; echo up; while :; do sleep 0.05; done')
"$launch" --nproc-per-node 2 --grace 1 --run-dir "$dir/run-stubborn" -- "${stubborn[@]}" > "$dir-stubborn.out" 2>&1 &
pid=$!
pids+=("$pid")
wait_for "$dir-stubborn.out" "\[rank 0\] up"
wait_for "$dir/run-stubborn/attempt-0/rank-1.log" "^up"
kill -USR1 "$pid"
wait_exit "$pid"
rc=$?
((rc == 1)) || fail "ranks that ignore USR1 should be ended after --grace 1 (exit 1), got $rc: $(tail "$dir-stubborn.out")"
pass "10 rounds of USR1 to every process of the job: each ended 75; ranks that ignore it end after --grace"

# 6. The restart budget is for the whole job; bad input is not restarted; usage errors are named.
# A job that always fails at run time: rank 0's loss is NaN from the first step,
# and one non-finite step stops the job (exit 1, which a restart might mend).
dir=$root/budget
always_fails=(--config "$config" --set loop.max_skipped_steps=1)
VLM_FAULT=nan:0:0 "$launch" --max-restarts 2 --restart-backoff 1 --run-dir "$dir/run" -- "$train" "${always_fails[@]}" \
  > "$dir.out" 2>&1
rc=$?
((rc == 1)) || fail "a job that always fails should exit 1, got $rc"
grep -q "restart 1 of 2 in 1s" "$dir.out" && grep -q "restart 2 of 2 in 2s" "$dir.out" ||
  fail "the backoff does not double: $(grep restart "$dir.out")"
[[ -d $dir/run/attempt-2 && ! -d $dir/run/attempt-3 ]] || fail "not exactly 3 attempts"
grep -q "summary: 2 of 2 restarts used" "$dir.out" || fail "no summary: $(tail "$dir.out")"
grep -q "first to fail: rank 0 on .*exit code 1" "$dir/run/attempt-2/failure.txt" ||
  fail "the report lacks the exit code: $(cat "$dir/run/attempt-2/failure.txt")"
# Missing data is the command's input too: exit 2, no restart.
"$launch" --max-restarts 2 --run-dir "$dir/run-nodata" -- "$train" --config "$config" \
  --set data.fashion_mnist_dir="$root/no-data" > "$dir.nodata" 2>&1
rc=$?
((rc == 2)) && grep -q "not restarted: the command's input is wrong" "$dir.nodata" && [[ ! -d $dir/run-nodata/attempt-1 ]] ||
  fail "missing data should end the job with 2 and no restart, got $rc: $(tail -5 "$dir.nodata")"
# A config error is the command's input: exit 2 on every rank, no restart. The config
# is read before anything else; its error's flight records still go to the run dir.
"$launch" --nproc-per-node 2 --max-restarts 2 --run-dir "$dir/run2" -- "$train" --config "$root/missing.pbtxt" \
  > "$dir.out2" 2>&1
rc=$?
((rc == 2)) && grep -q "not restarted: the command's input is wrong" "$dir.out2" && [[ ! -d $dir/run2/attempt-1 ]] ||
  fail "a config error should end the job with 2 and no restart, got $rc: $(tail -5 "$dir.out2")"
compgen -G "$dir/run2/attempt-0/flight/rank-*.json" > /dev/null || fail "no flight records in the run dir: $(ls -R "$dir")"
"$launch" > "$dir.usage" 2>&1
(($? == 2)) && grep -q "no command" "$dir.usage" || fail "no command is not a usage error"
"$launch" --nnodes 2 -- true > "$dir.usage" 2>&1
(($? == 2)) && grep -q "needs --hostfile" "$dir.usage" || fail "--nnodes 2 without hosts is not a usage error"
"$launch" --nnodes abc -- true > "$dir.usage" 2>&1
(($? == 2)) && grep -q "\-\-nnodes 'abc' is not a whole number" "$dir.usage" || fail "--nnodes abc: $(cat "$dir.usage")"
"$launch" --nproc-per-node 99999999999999999999 -- true > "$dir.usage" 2>&1  # bash's arithmetic would wrap it
(($? == 2)) && grep -q "is not a whole number from 0 to 999999" "$dir.usage" || fail "a 20-digit --nproc-per-node: $(cat "$dir.usage")"
: > "$dir.hosts"
"$launch" --hostfile "$dir.hosts" -- true > "$dir.usage" 2>&1
(($? == 2)) && grep -q "lists no hosts" "$dir.usage" || fail "an empty hostfile: $(cat "$dir.usage")"
"$launch" --tee x -- true > "$dir.usage" 2>&1
(($? == 2)) && grep -q "\-\-tee 'x'" "$dir.usage" || fail "a bad --tee is not a usage error"
# A stop signal while waiting to restart: nothing runs, the job is preempted (75).
VLM_FAULT=nan:0:0 "$launch" --max-restarts 1 --restart-backoff 600 --run-dir "$dir/run-wait" -- "$train" \
  "${always_fails[@]}" > "$dir-wait.out" 2>&1 &
pid=$!
pids+=("$pid")
wait_for "$dir-wait.out" "restart 1 of 1 in 600s"
kill -TERM "$pid"
wait_exit "$pid"
rc=$?
((rc == 75)) || fail "SIGTERM during the restart wait should end the launcher with 75, got $rc: $(tail -3 "$dir-wait.out")"
grep -q "stopped by SIGTERM while waiting to restart" "$dir-wait.out" || fail "the summary does not say so: $(tail -3 "$dir-wait.out")"
pass "the restart budget (3 attempts, backoff 1 s then 2 s, then exit 1), a stop while waiting to restart (75) and usage errors (exit 2)"

echo "launch tests: $passed passed, 0 failed"
