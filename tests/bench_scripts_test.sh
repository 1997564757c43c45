#!/usr/bin/env bash
# The benchmark scripts stay true: the PyTorch DDP reference
# (bench/ddp_reference.py) builds the same model as vlmtrain (same unique
# parameter count, finite loss in fp32 and bf16), and the scaling model
# (bench/scaling_model.py) prints its closed forms, bench/zero_compare.sh
# measures ZeRO-1's optimizer state at 1/ranks of the unsharded one,
# bench/onednn_time.py counts a bf16 step's oneDNN products, and
# bench/perf_ops.py finds LibTorch's operators and their callers on perf's stacks.
# usage: bench_scripts_test.sh VLM_DP_BENCH SOURCE_DIR
set -uo pipefail
dp_bench=$1 source=$2
source "$(dirname "$0")/script_lib.sh"
python=/usr/bin/python3  # Debian's, where python3-torch lives
field() { sed -nE "s/.*\"$1\": ?([0-9.a-z]+).*/\1/p"; }

echo "== the PyTorch reference has vlmtrain's model"
"$python" -c 'import torch' 2> /dev/null || fail "python3-torch is missing: run scripts/install-deps.sh"
vlm=$("$dp_bench" --overlap on --steps 1 --warmup 0 --set loop.global_batch_size=8 2> "$root/vlm.err") ||
  fail "vlm-dp-bench: $(tail -3 "$root/vlm.err")"
vlm_parameters=$(echo "$vlm" | grep '"bench":"dp_step"' | field parameters)
"$dp_bench" --help > "$root/help.out" 2>&1 && grep -q "^  --steps (default: 8)" "$root/help.out" ||
  fail "vlm-dp-bench --help: $(cat "$root/help.out")"
for precision in fp32 bf16; do
  ref=$("$python" "$source/bench/ddp_reference.py" --ranks 1 --threads 1 --precision $precision --steps 1 --warmup 0 \
    --global-batch 8 2> "$root/ref.err") || fail "ddp_reference.py --precision $precision: $(tail -3 "$root/ref.err")"
  [[ $(echo "$ref" | field parameters) == "$vlm_parameters" ]] ||
    fail "parameters: PyTorch reference $(echo "$ref" | field parameters), vlmtrain $vlm_parameters"
  [[ $(echo "$ref" | field correct) == true ]] || fail "the reference's loss is not finite in $precision: $ref"
done
pass "same parameter count ($vlm_parameters), finite loss in fp32 and bf16"

echo "== the scaling model's closed forms"
# 2 ranks, 1e6 fp32 parameters, 2 GB/s, 10 us: ring = 2 (n-1)/n S/B + 2 (n-1) alpha = 2.000 + 0.020 ms;
# 1 ms of compute per sample x 10 samples, all of the allreduce exposed: efficiency 10 / 12.020.
out=$("$python" "$source/bench/scaling_model.py" --preset here --params 1e6 --grad-bytes 4 --sample-seconds 1e-3 \
  --batch 10 --gpus 1 2 --stages 1 --algorithm ring --no-overlap) || fail "scaling_model.py: $out"
row() { echo "$out" | awk -v g="$1" '$1 == g && $3 == 1 { print $4, $7, $8, $9 }'; }
[[ $(row 1) == "10.000 0.000 0.000 100.0%" ]] || fail "1 rank: want 10.000 ms, no communication, 100%: $(row 1)"
[[ $(row 2) == "12.020 2.020 2.020 83.2%" ]] || fail "2 ranks: want step 12.020, allreduce 2.020, 83.2%: $(row 2)"
pass "ring allreduce and efficiency as computed by hand"

echo "== ZeRO-1 against plain DP"
out=$(VLM_DP_BENCH=$dp_bench bash "$source/bench/zero_compare.sh" --rounds 1 --ranks 2 --steps 1 \
  --config "$source/configs/tiny_test.pbtxt" 2>&1) || fail "zero_compare.sh: $(echo "$out" | tail -3)"
echo "$out"
share=$(echo "$out" | sed -nE 's/.*unsharded = ([0-9.]+)$/\1/p')
awk -v s="$share" 'BEGIN { exit !(s >= 1 && s < 1.05) }' || fail "rank 0's shard x 2 / unsharded state: want 1 (padding only), got '$share'"
pass "ZeRO-1 holds 1/2 of the optimizer state per rank ($share x the even share)"

echo "== oneDNN's time in a bf16 step"
# The tiny model, 2 samples a step on one rank; oneDNN's bf16 products need AVX512-BF16 or AMX.
if grep -q -w 'avx512_bf16\|amx_bf16' /proc/cpuinfo; then
  out=$("$python" "$source/bench/onednn_time.py" --ranks 1 --steps 1 3 -- "$dp_bench" --precision bf16 --overlap on \
    --warmup 1 --steps '{steps}' --config "$source/configs/tiny_test.pbtxt" --set loop.global_batch_size=2 2>&1) ||
    fail "onednn_time.py: $(echo "$out" | tail -3)"
  echo "$out"
  calls=$(echo "$out" | awk '/^linear layers/ { print $(NF-2) }')
  awk -v c="$calls" 'BEGIN { exit !(c > 0 && c == int(c)) }' ||
    fail "want a whole number of linear products per step, above 0: '$calls'"
  pass "oneDNN timed $calls linear products per step"
else
  pass "oneDNN's bf16 timing skipped: this CPU has neither AVX512-BF16 nor AMX"
fi

echo "== perf's samples by operator"
if ! perf record -q -o "$root/probe.data" -- true > "$root/probe.log" 2>&1; then
  pass "perf_ops.py skipped: perf cannot sample here ($(head -1 "$root/probe.log"))"
else
  out=$("$python" "$source/bench/perf_ops.py" --last 1 --top 40 -- "$dp_bench" --overlap on --warmup 1 --steps 100 \
    --config "$source/configs/tiny_test.pbtxt" --set loop.global_batch_size=8 2>&1) ||
    fail "perf_ops.py: $(echo "$out" | tail -3)"
  echo "$out" | head -12
  samples=$(echo "$out" | sed -nE 's/^perf_ops: vlm-dp-bench, 1 process\(es\), .*: ([0-9]+) samples$/\1/p')
  [[ -n $samples && $samples -gt 0 ]] || fail "want samples from vlm-dp-bench: $(echo "$out" | head -1)"
  attributed=$(echo "$out" | grep -cE '^ *[0-9.]+%  [a-z_]+ <- (vlm::|[A-Za-z]+Backward[0-9])')
  ((attributed > 0)) || fail "want LibTorch operators attributed to a vlmtrain function or an autograd node"
  pass "perf_ops.py attributed $samples samples, $attributed operator rows with their callers"
fi

echo "bench script tests: $passed passed, 0 failed"
