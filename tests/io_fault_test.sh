#!/usr/bin/env bash
# A save that fails at any point of its I/O (a write, an fsync, a close, a
# rename: an LD_PRELOAD shim makes the call fail as a failing disk would; and
# a real full disk, a small tmpfs) fails with a message naming the path, keeps
# the previous checkpoint and `latest` valid and resumable, and leaves no
# unfinished step behind; a failed pruning after a committed save is a warning.
# usage: io_fault_test.sh VLM_TRAIN VLM_CKPT CONFIG SHIM.so
set -uo pipefail
train=$1 ckpt=$2 config=$3 shim=$4
root=$(mktemp -d)
mounted=""
cleanup() { [[ -n $mounted ]] && umount "$mounted"; rm -rf "$root"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
passed=0
pass() { echo "ok: $*"; passed=$((passed + 1)); }
latest_name() { cut -d' ' -f1 "$1/latest"; }
base=(--config "$config" --set checkpoint.every_steps=1 --set checkpoint.keep=2 --set loop.log_every=1)

# A folder with checkpoints of steps 1 and 2 (latest: step 2), copied for each case.
"$train" "${base[@]}" --set checkpoint.dir="$root/base" --set loop.steps=2 > "$root/base.log" 2>&1 || fail "base run"
[[ $(latest_name "$root/base") == step-00000002 ]] || fail "base run: latest is $(cat "$root/base/latest")"

# still_good DIR LOG: the failed run's folder is as it was, and resumes.
still_good() {
  local dir=$1 log=$2
  [[ $(latest_name "$dir") == step-00000002 ]] || fail "latest moved: $(cat "$dir/latest")"
  "$ckpt" verify "$dir" > /dev/null || fail "latest does not verify after the failed save"
  [[ ! -e $dir/step-00000003 ]] || fail "the failed save left $dir/step-00000003 behind: $(ls "$dir/step-00000003")"
  compgen -G "$dir/step-*/*.tmp" > /dev/null && fail "temporary files left: $(ls "$dir"/step-*/*.tmp)"
  "$train" "${base[@]}" --set checkpoint.dir="$dir" --set loop.steps=3 --resume latest > "$log.resume" 2>&1 ||
    fail "could not resume after the failed save: $(tail -3 "$log.resume")"
  [[ $(latest_name "$dir") == step-00000003 ]] || fail "the resumed run did not save step 3"
}

echo "== a call of the save fails (EIO)"
case_number=0
for fault in write:shard-00000.bin.tmp fsync:shard-00000.bin.tmp close:shard-00000.bin.tmp \
             write:manifest.pb.tmp fsync:manifest.pb.tmp close:manifest.pb.tmp rename:manifest.pb \
             write:latest.tmp fsync:latest.tmp rename:latest; do
  case_number=$((case_number + 1))
  dir="$root/case$case_number"  # a name the fault's path text does not match
  cp -r "$root/base" "$dir"
  log="$dir.log"
  if VLM_FAIL_IO="$fault" LD_PRELOAD="$shim" "$train" "${base[@]}" --set checkpoint.dir="$dir" --set loop.steps=3 \
      --resume latest > "$log" 2>&1; then
    fail "$fault: the run succeeded though its save failed"
  fi
  path=${fault#*:}
  grep -qE "$dir/step-00000003/${path%.tmp}(\.tmp)?: ${fault%%:*} failed: Input/output error|$dir/${path%.tmp}(\.tmp)?: ${fault%%:*} failed: Input/output error" "$log" ||
    fail "$fault: the error does not name the path and the call: $(grep -m2 -E 'error|failed' "$log")"
  still_good "$dir" "$log"
  echo "$fault: $(grep -m1 -oE "[^ ]*: ${fault%%:*} failed: [^.(]*" "$log")"
done
pass "failed calls"

echo "== latest is renamed into place, then its folder's fsync fails: the save fails, and says latest moved"
dir="$root/latest-moved"
cp -r "$root/base" "$dir"
# The folder's fsyncs: the start-up probe's, then latest's (the second).
if VLM_FAIL_IO="fsync:latest-moved\$:EIO:2" LD_PRELOAD="$shim" "$train" "${base[@]}" --set checkpoint.dir="$dir" \
    --set loop.steps=3 --resume latest > "$dir.log" 2>&1; then
  fail "the run succeeded though latest's folder could not be synced"
fi
grep -q "$dir: fsync failed: Input/output error (errno 5); latest already names step-00000003" "$dir.log" ||
  fail "the error does not say that latest moved: $(grep -m2 -E 'error|failed' "$dir.log")"
[[ $(latest_name "$dir") == step-00000003 ]] && "$ckpt" verify "$dir" > /dev/null ||
  fail "latest names a step that does not verify"
pass "latest moved, then the fsync failed"

echo "== pruning fails after a committed save: a warning, the save stands"
dir="$root/prune"
cp -r "$root/base" "$dir"
VLM_FAIL_IO="remove:step-00000001" LD_PRELOAD="$shim" "$train" "${base[@]}" --set checkpoint.dir="$dir" --set loop.steps=3 \
  --resume latest > "$dir.log" 2>&1 || fail "a pruning failure failed the run: $(tail -3 "$dir.log")"
grep -q "is saved, but older ones could not be deleted" "$dir.log" || fail "no warning about the pruning failure"
[[ $(latest_name "$dir") == step-00000003 ]] && "$ckpt" verify "$dir" > /dev/null || fail "the committed save is not latest"
pass "pruning failure is a warning"

echo "== a full disk (a tmpfs with room for two and a half checkpoints): ENOSPC"
mnt="$root/tmpfs"
mkdir -p "$mnt"
per_checkpoint=$(du -sk "$root/base/step-00000002" | cut -f1)
if ! mount -t tmpfs -o size=$((per_checkpoint * 5 / 2))k tmpfs "$mnt" 2> "$root/mount.err"; then
  echo "SKIP: cannot mount a tmpfs here ($(cat "$root/mount.err")); the full-disk case needs root"
  echo "io fault tests: $passed passed, 0 failed (full disk skipped)"
  exit 0
fi
mounted=$mnt
# keep=2: two checkpoints fit, the third does not.
log="$root/enospc.log"
if "$train" "${base[@]}" --set checkpoint.dir="$mnt/ckpt" --set loop.steps=6 > "$log" 2>&1; then
  fail "saving onto a full disk succeeded"
fi
grep -qE "$mnt/ckpt/step-0000000[0-9]/[a-z0-9.-]+: (write|fsync|close|open) failed: No space left on device" "$log" ||
  fail "the error does not say ENOSPC with the path: $(grep -m2 -E 'error|failed' "$log")"
name=$(latest_name "$mnt/ckpt")
"$ckpt" verify "$mnt/ckpt/latest" > /dev/null || fail "latest ($name) does not verify on the full disk"
compgen -G "$mnt/ckpt/step-*/*.tmp" > /dev/null && fail "temporary files left on the full disk"
step=$((10#${name#step-}))
"$train" "${base[@]}" --set checkpoint.dir="$root/elsewhere" --set loop.steps=$((step + 1)) \
  --resume "$mnt/ckpt/latest" > "$root/enospc.resume.log" 2>&1 || fail "could not resume $name from the full disk"
grep -q "resumed from $mnt/ckpt/$name at step $step" "$root/enospc.resume.log" || fail "did not resume $name"
echo "full disk: $(grep -m1 -oE '[^ ]*: [a-z]+ failed: No space left on device' "$log"); latest $name verifies and resumes"
pass "full disk"

echo "== a save stuck on its storage (an fsync that would take 600 s) ends the job at comm.timeout_seconds, named"
# One process: no other rank waits in a collective that would notice. The
# flight record's file is a FIFO that no one reads, so writing it blocks too,
# as on a dead NFS server: the report comes first, and the job ends anyway.
dir="$root/stuck"
cp -r "$root/base" "$dir"
mkdir -p "$dir/flight" && mkfifo "$dir/flight/rank-0.json.tmp"
LD_PRELOAD=$shim VLM_SLOW_FSYNC="shard-:600" timeout 300 "$train" "${base[@]}" --set checkpoint.dir="$dir" --set loop.steps=3 \
  --resume latest --set comm.timeout_seconds=2 > "$dir.log" 2>&1
rc=$?
((rc == 1)) || fail "a save stuck on its storage should end the job with 1, got $rc (124: it hung): $(tail -3 "$dir.log")"
grep -q "HANG detected by rank 0: writing .*'s shard of $dir/step-00000003 (is its storage stuck?) did not complete" \
  "$dir.log" || fail "the report does not name the stuck shard: $(grep vlm: "$dir.log")"
grep -q "the flight record was not written within 10 s" "$dir.log" || fail "a blocked flight record went unsaid"
[[ $(latest_name "$dir") == step-00000002 ]] && "$ckpt" verify "$dir" > /dev/null || fail "the stuck save damaged latest"
"$train" "${base[@]}" --set checkpoint.dir="$dir" --set loop.steps=3 --resume latest > "$dir.resume.log" 2>&1 ||
  fail "could not resume after the stuck save: $(tail -3 "$dir.resume.log")"
pass "a stuck save ends the job"

echo "io fault tests: $passed passed, 0 failed"
