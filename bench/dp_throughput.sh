#!/usr/bin/env bash
# One process against two ranks on the same global batch, alternating in
# rounds: 1 process x 2 threads (one replica), 1 process x 2 replicas (Note
# [Replicas in one process]), 2 ranks x 1 thread. Prints each round, then the
# medians with min-max and the ratios to the two ranks.
#   bash bench/dp_throughput.sh [--rounds N] [vlm-dp-bench flags, e.g. --steps 10 --precision bf16]
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
rounds=5
if [[ ${1:-} == --rounds ]]; then rounds=$2; shift 2; fi
flags=(--overlap on "$@")
echo "dp_throughput: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs," \
  "$rounds rounds, vlm-dp-bench ${flags[*]}"

rate() { grep '"overlap":true' | sed -E 's/.*"samples_per_second":([0-9.]+).*/\1/'; }
declare -A samples
for ((r = 1; r <= rounds; r++)); do
  threads=$(build/bench/vlm-dp-bench "${flags[@]}" | rate)
  replicas=$(build/bench/vlm-dp-bench "${flags[@]}" --set parallel.replicas_per_process=2 | rate)
  ranks=$(mpirun --oversubscribe -np 2 build/bench/vlm-dp-bench "${flags[@]}" | rate)
  samples[threads]+="$threads " samples[replicas]+="$replicas " samples[ranks]+="$ranks "
  echo "round $r: samples/s: 1 process x 2 threads $threads, 1 process x 2 replicas $replicas, 2 ranks x 1 thread $ranks"
done

summary() {  # FORMAT VALUES...: "median (min-max)"
  local format=$1
  shift
  printf '%s\n' "$@" | sort -g | awk -v f="$format" '{ v[NR] = $1 } END {
    m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf f " (" f "-" f ")", m, v[1], v[NR] }'
}
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratios() {  # NAME: its per-round ratios to the two ranks, summarised
  local a=(${samples[$1]}) b=(${samples[ranks]}) out=() i
  for i in "${!a[@]}"; do out+=("$(awk -v x="${a[i]}" -v y="${b[i]}" 'BEGIN { print x / y }')"); done
  summary %.3f "${out[@]}"
}
echo "samples/s, median (min-max) over $rounds rounds:"
echo "  1 process x 2 threads:  $(summary %.1f ${samples[threads]}); to 2 ranks, per round: $(ratios threads)"
echo "  1 process x 2 replicas: $(summary %.1f ${samples[replicas]}); to 2 ranks, per round: $(ratios replicas)"
echo "  2 ranks x 1 thread:     $(summary %.1f ${samples[ranks]})"
awk -v a="$(median ${samples[replicas]})" -v b="$(median ${samples[ranks]})" \
  'BEGIN { printf "1 process x 2 replicas / 2 ranks x 1 thread (medians): %.3f\n", a / b }'
