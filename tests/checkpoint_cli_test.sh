#!/usr/bin/env bash
# Checkpoints as a user meets them, with real processes, signals and files.
# Every wait is for an event (a log line, a file), never a fixed delay.
# usage: checkpoint_cli_test.sh VLM_TRAIN VLM_CKPT CONFIG FIXTURE_DIR
set -uo pipefail
train=$1 ckpt=$2 config=$3 fixture=$4
root=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2> /dev/null; done; rm -rf "$root"; }
trap cleanup EXIT
[[ -n ${KEEP:-} ]] && trap - EXIT
fail() { echo "FAIL: $*"; exit 1; }
passed=0
pass() { echo "ok: $*"; passed=$((passed + 1)); }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# wait_for FILE PATTERN [SECONDS]: until FILE has a line matching PATTERN (a generous bound).
wait_for() {
  local file=$1 pattern=$2 limit=${3:-120}
  for _ in $(seq $((limit * 20))); do
    grep -qE -- "$pattern" "$file" 2> /dev/null && return 0
    sleep 0.05  # polls until the line appears (bounded above)
  done
  fail "waited ${limit}s for /$pattern/ in $file"
}
latest_name() { cut -d' ' -f1 "$1/latest"; }
# resumes DIR's latest for one more step, or fails
resumes() {
  local dir=$1 log=$2
  local name step
  name=$(latest_name "$dir")
  step=$((10#${name#step-}))
  "$train" --config "$config" --set checkpoint.dir="$dir" --set loop.steps=$((step + 1)) "${@:3}" --resume latest \
    > "$log" 2>&1 || fail "could not resume $dir (see below)"$'\n'"$(tail -5 "$log")"
  grep -q "resumed from $dir/$name at step $step" "$log" || fail "did not resume $dir at step $step"
}

echo "== resume; vlm-ckpt takes ROOT, ROOT/latest or a step directory"
"$train" --config "$config" --set checkpoint.dir="$root/a" --set loop.steps=10 > "$root/a.log" 2>&1 || fail "first run"
"$train" --config "$config" --set checkpoint.dir="$root/a" --set loop.steps=15 --resume latest > "$root/b.log" 2>&1 || fail "resumed run"
grep -q "resumed from $root/a/step-00000010 at step 10" "$root/b.log" || fail "did not resume at step 10"
grep -q "step 15/15" "$root/b.log" || fail "resumed run did not reach step 15"
[[ $(latest_name "$root/a") == step-00000015 ]] || fail "latest is not step 15"
for path in "$root/a" "$root/a/latest" "$root/a/step-00000015"; do
  "$ckpt" verify "$path" | grep -q "verified $root/a/step-00000015" || fail "vlm-ckpt verify $path"
done
pass "resume and vlm-ckpt paths"

echo "== what must not change on resume is refused; nothing is written over"
"$train" --config "$config" --set checkpoint.dir="$root/a" --set loop.steps=20 --set loop.global_batch_size=16 \
  --resume latest > "$root/batch.log" 2>&1 && fail "resumed with another global batch size"
grep -q "loop.global_batch_size(16) differs from the 32 the checkpoint was trained with" "$root/batch.log" ||
  fail "no message for another global batch size: $(tail -3 "$root/batch.log")"
"$train" --config "$config" --set checkpoint.dir="$root/a" --set loop.steps=15 --resume latest > "$root/done.log" 2>&1 ||
  fail "resuming a finished run"
grep -q "nothing left to train: the checkpoint is at step 15 and loop.steps is 15" "$root/done.log" ||
  fail "no message for a finished run: $(tail -3 "$root/done.log")"
for out in "$root/a/latest" "$root/a/step-00000015/shard-00000.bin" "$root/a/new.vlm"; do
  "$ckpt" export "$root/a" "$out" > "$root/export.log" 2>&1 && fail "vlm-ckpt export wrote $out"
  grep -q "OUT $out is inside $root/a" "$root/export.log" || fail "export into the checkpoint: $(cat "$root/export.log")"
done
[[ $(latest_name "$root/a") == step-00000015 ]] && "$ckpt" verify "$root/a" > /dev/null || fail "the checkpoint changed"
pass "another global batch size, a finished run, an export into the checkpoint"

echo "== different data-parallel sizes: 1 -> 2 -> 4 ranks"
loss_at() { sed -nE "s/^step $2\/[0-9]+ loss ([0-9.]+).*/\1/p" "$1"; }
# Runs that stop at different steps share one schedule only if it does not
# depend on loop.steps: constant after warm-up.
const=(--set optim.min_lr_ratio=1)
"$train" --config "$config" "${const[@]}" --set loop.steps=14 --set loop.log_every=1 > "$root/ref.log" 2>&1 || fail "reference run"
"$train" --config "$config" "${const[@]}" --set checkpoint.dir="$root/d" --set loop.steps=10 > "$root/d1.log" 2>&1 || fail "1 rank"
mpirun --oversubscribe -np 2 "$train" --config "$config" "${const[@]}" --set checkpoint.dir="$root/d" --set loop.steps=12 \
  --set loop.log_every=1 --resume latest > "$root/d2.log" 2>&1 || fail "2 ranks resuming"
mpirun --oversubscribe -np 4 "$train" --config "$config" "${const[@]}" --set checkpoint.dir="$root/d" --set loop.steps=14 \
  --set loop.log_every=1 --resume latest > "$root/d4.log" 2>&1 || fail "4 ranks resuming"
for pair in "d2.log 11" "d2.log 12" "d4.log 13" "d4.log 14"; do
  set -- $pair
  got=$(loss_at "$root/$1" "$2") want=$(loss_at "$root/ref.log" "$2")
  [[ -n $got && -n $want ]] || fail "no loss for step $2 in $1"
  awk -v a="$got" -v b="$want" 'BEGIN { exit !(a - b < 2e-4 && b - a < 2e-4) }' ||
    fail "step $2 after resharding: loss $got, one process without stopping: $want"
  echo "step $2 ($1): loss $got, uninterrupted one process $want"
done
pass "resharding"

echo "== pipeline stages: 2-stage checkpoint, verified, resumed by one process"
mpirun --oversubscribe -np 2 "$train" --config "$config" --set parallel.pipeline_stages=2 --set loop.micro_batches=2 \
  --set checkpoint.dir="$root/pp" --set loop.steps=6 > "$root/pp.log" 2>&1 || fail "pipeline run"
"$ckpt" verify "$root/pp" > /dev/null || fail "the pipeline checkpoint does not verify"
"$ckpt" inspect "$root/pp" | grep -q "pipeline_stages 2" || fail "inspect does not show 2 stages"
"$ckpt" export "$root/pp" "$root/model.vlm" > /dev/null || fail "export"
"$ckpt" verify "$root/model.vlm" > /dev/null || fail "the exported model does not verify"
"$train" --config "$config" --set loop.micro_batches=2 --set checkpoint.dir="$root/pp" --set loop.steps=8 \
  --resume latest > "$root/pp1.log" 2>&1 || fail "one process resuming a pipeline checkpoint"
grep -q "resumed from $root/pp/step-00000006 at step 6" "$root/pp1.log" || fail "did not resume the pipeline checkpoint"
pass "pipeline checkpoints"

echo "== ZeRO-1: 2 ranks write their optimizer shards; one process resumes"
mpirun --oversubscribe -np 2 "$train" --config "$config" --set optim.zero_stage=1 \
  --set checkpoint.dir="$root/zero" --set loop.steps=6 > "$root/zero.log" 2>&1 || fail "ZeRO-1 run"$'\n'"$(tail -5 "$root/zero.log")"
grep -q "ZeRO-1" "$root/zero.log" || fail "the ZeRO-1 run did not say so"
"$ckpt" verify "$root/zero" > /dev/null || fail "the ZeRO-1 checkpoint does not verify"
ls "$root"/zero/step-00000006/shard-00001.bin > /dev/null || fail "rank 1 wrote no optimizer shard"
"$train" --config "$config" --set checkpoint.dir="$root/zero" --set loop.steps=8 \
  --resume latest > "$root/zero1.log" 2>&1 || fail "one process resuming a ZeRO-1 checkpoint"
grep -q "resumed from $root/zero/step-00000006 at step 6" "$root/zero1.log" || fail "did not resume the ZeRO-1 checkpoint"
pass "ZeRO-1 checkpoints"

echo "== formats 2 to 5 (the committed fixtures) resume and continue in format 6"
for version in 2 3 4 5; do
  dir=${fixture%-v2}-v$version
  "$train" --config "$dir/config.pbtxt" --set checkpoint.dir="$root/v$version" --set loop.steps=4 \
    --resume "$dir/ckpt/latest" > "$root/v$version.log" 2>&1 || fail "resuming the format-$version fixture"$'\n'"$(tail -5 "$root/v$version.log")"
  grep -q "resumed from $dir/ckpt/step-00000002 at step 2" "$root/v$version.log" || fail "did not resume the format-$version fixture at step 2"
  "$ckpt" inspect "$root/v$version" | grep -q "format 6, step 4" || fail "the continued format-$version run did not write format 6"
done
pass "formats 2 to 5 load"

echo "== preemption: SIGUSR1 to mpirun, and SIGTERM to one rank alone"
mpirun --oversubscribe -np 2 "$train" --config "$config" --set checkpoint.dir="$root/p" --set loop.steps=100000 \
  --set loop.log_every=1 > "$root/p.log" 2>&1 &
pid=$!; pids+=($pid)
wait_for "$root/p.log" "^step 3/"
kill -USR1 $pid
wait $pid; status=$?
[[ $status -eq 0 ]] || fail "preempted run exited $status"
grep -q "stopped by a signal" "$root/p.log" || fail "no stop message"
"$ckpt" verify "$root/p" > /dev/null || fail "the preemption checkpoint does not verify"
mpirun --oversubscribe -np 2 "$train" --config "$config" --set checkpoint.dir="$root/t" --set loop.steps=100000 \
  --set loop.log_every=1 > "$root/t.log" 2>&1 &
pid=$!; pids+=($pid)
wait_for "$root/t.log" "^step 3/"
ranks=($(pgrep -P $pid -f vlm-train))
((${#ranks[@]} == 2)) || fail "expected 2 rank processes under mpirun, found ${#ranks[@]}"
kill -TERM "${ranks[1]}"  # one rank only: the others learn it at the next stop agreement
wait $pid; status=$?
[[ $status -eq 0 ]] || fail "SIGTERM to one rank: the job exited $status"
grep -q "stopped by a signal" "$root/t.log" || fail "no stop message after SIGTERM to one rank"
"$ckpt" verify "$root/t" > /dev/null || fail "the SIGTERM checkpoint does not verify"
pass "preemption"

echo "== SIGKILL in the middle of saves"
# A big model and a tiny batch make each save (~100 MB, fsynced) most of a step.
big=(--set model.d_model=512 --set model.heads=8 --set loop.global_batch_size=2 --set optim.warmup_steps=1
     --set checkpoint.every_steps=1 --set checkpoint.keep=2 --set checkpoint.async=false --set loop.log_every=1)
# (a) Deterministic: the rank stops itself after writing its shard of step 3's save, before
# anything is agreed or committed (VLM_FAULT), and is killed there.
dir="$root/k1"
VLM_FAULT=stop:checkpoint:0:3 "$train" --config "$config" --set checkpoint.dir="$dir" --set loop.steps=100000 "${big[@]}" \
  > "$dir.log" 2>&1 &
pid=$!; pids+=($pid)
wait_for "$dir.log" "stops itself at checkpoint"
kill -9 $pid; wait $pid 2> /dev/null
[[ -f $dir/step-00000003/shard-00000.bin && ! -f $dir/step-00000003/manifest.pb ]] ||
  fail "the kill did not land between the shard and the manifest"
[[ $(latest_name "$dir") == step-00000002 ]] || fail "latest moved to an unfinished save: $(cat "$dir/latest")"
"$ckpt" verify "$dir" > /dev/null || fail "after SIGKILL mid-save, latest does not verify"
resumes "$dir" "$dir.resume.log" "${big[@]}"
[[ ! -d $dir/step-00000003 || -f $dir/step-00000003/manifest.pb ]] || fail "the unfinished save was left behind"
# (a') Deterministic: killed after step S's manifest, before `latest` names it (at S = 1 there is no
# `latest` yet). The resume takes step S.
for s in 3 1; do
  dir="$root/k3-$s"
  VLM_FAULT=stop:commit:0:$s "$train" --config "$config" --set checkpoint.dir="$dir" --set loop.steps=100000 "${big[@]}" \
    > "$dir.log" 2>&1 &
  pid=$!; pids+=($pid)
  wait_for "$dir.log" "stops itself at commit"
  kill -9 $pid; wait $pid 2> /dev/null
  before=$( ((s > 1)) && echo "step-0000000$((s - 1))" || echo none)
  [[ -f $dir/step-0000000$s/manifest.pb && $(latest_name "$dir" 2> /dev/null || echo none) == "$before" ]] ||
    fail "the kill did not land between the manifest and latest"
  "$train" --config "$config" --set checkpoint.dir="$dir" --set loop.steps=$((s + 1)) "${big[@]}" --resume auto \
    > "$dir.resume.log" 2>&1 || fail "could not resume after a kill between the manifest and latest: $(tail -3 "$dir.resume.log")"
  grep -q "step-0000000$s is complete, but a save cut short did not name it" "$dir.resume.log" || fail "the recovery was not said"
  grep -q "resumed from $dir/step-0000000$s at step $s" "$dir.resume.log" || fail "did not resume step $s"
done
# (b) Observed: killed as soon as a shard is being written (its temporary file exists).
for round in 1 2; do
  dir="$root/k2$round"
  "$train" --config "$config" --set checkpoint.dir="$dir" --set loop.steps=100000 "${big[@]}" > "$dir.log" 2>&1 &
  pid=$!; pids+=($pid)
  wait_for "$dir.log" "^step $((round + 1))/"
  seen=false
  for _ in $(seq 2400); do compgen -G "$dir/step-*/shard-*.bin.tmp" > /dev/null && { seen=true; break; }; sleep 0.05; done
  kill -9 $pid; wait $pid 2> /dev/null
  $seen || fail "round $round: no shard was seen being written in 120 s: the kill would prove nothing"
  "$ckpt" verify "$dir" > /dev/null || fail "after SIGKILL while a shard was being written, latest does not verify"
  unfinished=$(find "$dir" -maxdepth 1 -name 'step-*' -type d '!' -exec test -e '{}/manifest.pb' ';' -print | wc -l)
  echo "round $round: killed while writing a shard; latest=$(latest_name "$dir"), unfinished step directories: $unfinished"
  resumes "$dir" "$dir.resume.log" "${big[@]}"
done
pass "SIGKILL mid-save"

echo "== damage: flipped bits in manifest.pb, latest and a shard are refused by vlm-ckpt verify and --resume"
good="$root/a"
flip() {  # flip FILE BIT
  local offset=$(($2 / 8)) byte
  byte=$(od -An -tu1 -j "$offset" -N1 "$1" | tr -d ' ')
  printf "$(printf '\\%03o' $((byte ^ (1 << ($2 % 8)))))" | dd of="$1" bs=1 seek="$offset" conv=notrunc status=none
}
damaged=0
for target in manifest latest shard; do
  case $target in
    manifest) file=step-00000015/manifest.pb ;;
    latest) file=latest ;;
    shard) file=step-00000015/shard-00000.bin ;;
  esac
  bits=$(($(stat -c %s "$good/$file") * 8))
  for k in 0 1 2 3 4 5 6 7; do
    bit=$(((k * 2654435761 + 12345) % bits))
    copy="$root/damaged-$target-$k"
    cp -r "$good" "$copy"
    flip "$copy/$file" $bit
    if "$ckpt" verify "$copy" > "$copy.verify" 2>&1; then fail "vlm-ckpt verify accepted bit $bit of $file flipped"; fi
    grep -qE "damaged|checksum|not a valid|does not match|mismatch" "$copy.verify" ||
      fail "unclear message for bit $bit of $file: $(cat "$copy.verify")"
    if ((k == 0)); then
      if "$train" --config "$config" --set checkpoint.dir="$copy" --set loop.steps=16 --resume latest > "$copy.train" 2>&1; then
        fail "--resume accepted bit $bit of $file flipped"
      fi
      grep -q "vlm-train: error" "$copy.train" || fail "--resume of a damaged $file: no error message"
    fi
    damaged=$((damaged + 1))
    rm -rf "$copy"
  done
done
echo "$damaged damaged copies refused"
pass "damage detected"

echo "== pruning and folder rules: a fresh run into a folder with another run's checkpoints"
dir="$root/prune"
"$train" --config "$config" --set checkpoint.dir="$dir" --set checkpoint.keep=2 --set checkpoint.every_steps=1 \
  --set loop.steps=6 > "$dir.1.log" 2>&1 || fail "first run"
"$train" --config "$config" --set checkpoint.dir="$dir" --set checkpoint.keep=2 --set loop.steps=3 > "$dir.2.log" 2>&1
rc=$?
((rc == 2)) || fail "a fresh run into a folder holding another run's checkpoints should exit 2 (not retried), got $rc"
grep -q "holds step-00000005, step-00000006, but this run starts fresh" "$dir.2.log" || fail "no clear refusal: $(tail -3 "$dir.2.log")"
[[ $(latest_name "$dir") == step-00000006 ]] && "$ckpt" verify "$dir" > /dev/null || fail "the refused run damaged the folder"
if "$train" --config "$config" --set checkpoint.dir="$dir" --set loop.steps=8 --resume "$dir/step-00000005" > "$dir.3.log" 2>&1; then
  fail "resuming an older step into a folder holding later ones was accepted"
fi
grep -q "holds step-00000006, later than the step 5" "$dir.3.log" || fail "no clear refusal of an older resume"
# An overwrite whose start-up fails (a typo in the data folder) deletes nothing.
if "$train" --config "$config" --set checkpoint.dir="$dir" --set checkpoint.overwrite=true \
  --set data.fashion_mnist_dir="$root/no-such-folder" > "$dir.typo.log" 2>&1; then
  fail "a run with a missing data folder started"
fi
[[ -f $dir/step-00000005/manifest.pb && $(latest_name "$dir") == step-00000006 ]] && "$ckpt" verify "$dir" > /dev/null ||
  fail "an overwrite that failed at start-up deleted checkpoints"
"$train" --config "$config" --set checkpoint.dir="$dir" --set checkpoint.keep=2 --set loop.steps=3 \
  --set checkpoint.overwrite=true > "$dir.4.log" 2>&1 || fail "checkpoint.overwrite=true"
[[ $(latest_name "$dir") == step-00000003 && -f $dir/step-00000003/manifest.pb ]] || fail "latest does not name the run just written"
"$ckpt" verify "$dir" > /dev/null || fail "latest does not verify after overwrite"
pass "pruning and folder rules"

echo "== one job per folder"
dir="$root/lock"
"$train" --config "$config" --set checkpoint.dir="$dir" --set loop.steps=100000 --set loop.log_every=1 > "$dir.1.log" 2>&1 &
pid=$!; pids+=($pid)
wait_for "$dir.1.log" "^step 2/"
"$train" --config "$config" --set checkpoint.dir="$dir" --set loop.steps=3 --resume latest > "$dir.2.log" 2>&1
rc=$?
((rc == 1)) || fail "a second job into the folder of a running one should fail with 1 (the first may end: a retry may pass), got $rc"
grep -q "is in use by another job (pid $pid" "$dir.2.log" || fail "the second job's message does not name the first: $(tail -3 "$dir.2.log")"
kill -USR1 $pid; wait $pid || fail "the first job did not stop cleanly"
pass "one job per folder"

echo "checkpoint CLI: $passed passed, 0 failed"
