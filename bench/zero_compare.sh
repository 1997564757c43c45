#!/usr/bin/env bash
# ZeRO-1 against plain data parallelism on the same ranks, config and batch:
# `vlm-dp-bench --overlap on` with optim.zero_stage 0 and 1, alternating
# A B A B. Prints every round, then the median samples/s with the min-max,
# the ratio, and rank 0's optimizer state against 1/ranks of the unsharded one.
#
#   bash bench/zero_compare.sh [--rounds 5] [--ranks 2] [--steps 8] [--config configs/bench.pbtxt]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=5 ranks=2 steps=8 config=configs/bench.pbtxt
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2 ;;
    --ranks) ranks=$2 ;;
    --steps) steps=$2 ;;
    --config) config=$2 ;;
    *) echo "zero_compare.sh: unknown flag '$1'; flags: --rounds N --ranks N --steps N --config PATH" >&2; exit 2 ;;
  esac
  shift 2
done
bench=${VLM_DP_BENCH:-build/bench/vlm-dp-bench}
[ -x "$bench" ] || { echo "zero_compare.sh: $bench missing: run bash scripts/build.sh" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
field() { sed -E "s/.*\"$1\":([0-9.]+).*/\1/"; }
declare -A rate state
for round in $(seq 1 "$rounds"); do
  for stage in 0 1; do
    line=$(mpirun --oversubscribe -np "$ranks" "$bench" --config "$config" --steps "$steps" \
             --overlap on --set "optim.zero_stage=$stage" | grep '"bench":"dp_step"')
    grep -q '"correct":true' <<< "$line" || { echo "zero_compare.sh: zero_stage $stage: non-finite loss" >&2; exit 1; }
    rate[$stage]+="$(field samples_per_second <<< "$line") "
    state[$stage]=$(field optimizer_state_bytes <<< "$line")
    echo "round $round zero_stage $stage: $(field samples_per_second <<< "$line") samples/s, optimizer state ${state[$stage]} bytes on rank 0"
  done
done
# median (min-max) of the numbers on stdin, each printed with format $1
median() { tr ' ' '\n' | grep . | sort -g | awk -v f="${1:-%.1f}" '{ v[NR] = $1 } END { printf f " (" f "-" f ")", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2), v[1], v[NR] }'; }
ratios=$(paste -d' ' <(tr ' ' '\n' <<< "${rate[1]}" | grep .) <(tr ' ' '\n' <<< "${rate[0]}" | grep .) | awk '{ printf "%.3f ", $1 / $2 }')
echo "plain DP: $(median <<< "${rate[0]}") samples/s; ZeRO-1: $(median <<< "${rate[1]}") samples/s (median, min-max of $rounds rounds, $ranks ranks)"
echo "ZeRO-1 / plain, per round: $ratios-> median $(median %.3f <<< "$ratios")"
awk -v z="${state[1]}" -v p="${state[0]}" -v n="$ranks" 'BEGIN { printf "optimizer state on rank 0: %d bytes sharded, %d unsharded; x %d ranks / unsharded = %.4f\n", z, p, n, z * n / p }'
