#!/usr/bin/env bash
# Two builds side by side in one run, alternating A B A B: the data-parallel
# step (vlm-dp-bench, 1 and 2 ranks: samples/s) and the pipeline
# (vlm-pipeline-bench, 2 stages: the whole command's wall time, the same work
# for both, and the 1F1B bubble). Prints every round and the median ratio B/A.
#   bash bench/compare_builds.sh A_BENCH_DIR B_BENCH_DIR [ROUNDS]
# A_BENCH_DIR and B_BENCH_DIR hold vlm-dp-bench and vlm-pipeline-bench, for
# example a build of the previous commit (git worktree + cmake) and build/bench.
set -euo pipefail
if (($# < 2)) || [[ $1 == -h || $1 == --help ]]; then
  sed -n '2,8s/^# \{0,1\}//p' "$0"
  (($# >= 1)) && [[ $1 == -h || $1 == --help ]] && exit 0
  exit 2
fi
a=$1 b=$2 rounds=${3:-3}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
field() { sed -nE "s/.*$1\":([0-9.]+).*/\1/p"; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
declare -A results
for round in $(seq "$rounds"); do
  for build in A B; do
    dir=$a; [[ $build == B ]] && dir=$b
    for ranks in 1 2; do
      out=$(mpirun --oversubscribe -np $ranks "$dir/vlm-dp-bench" --steps 8 --warmup 2 | grep '"overlap":true')
      rate=$(echo "$out" | field samples_per_second)
      results["dp$ranks $build"]+="$rate "
      echo "round $round build $build: dp ${ranks} rank(s): $rate samples/s"
    done
    start=$(date +%s.%N)
    out=$(mpirun --oversubscribe -np 2 "$dir/vlm-pipeline-bench" --micro-batches 8 | grep '"schedule":"ONE_F_ONE_B"')
    seconds=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
    bubble=$(echo "$out" | field bubble)
    results["pp2_seconds $build"]+="$seconds "
    results["pp2_bubble $build"]+="$bubble "
    echo "round $round build $build: pp 2 stages (GPipe and 1F1B, m=8, 4 steps each): ${seconds}s; 1F1B bubble $bubble"
  done
done
for key in dp1 dp2 pp2_seconds pp2_bubble; do
  ma=$(echo "${results[$key A]}" | tr ' ' '\n' | grep . | median)
  mb=$(echo "${results[$key B]}" | tr ' ' '\n' | grep . | median)
  awk -v k="$key" -v a="$ma" -v b="$mb" -v ra="${results[$key A]}" -v rb="${results[$key B]}" \
    'BEGIN { printf "%s: A median %.4g [%s]  B median %.4g [%s]  B/A %.3f\n", k, a, ra, b, rb, b / a }'
done
