#!/usr/bin/env bash
# Throughput of 2 data-parallel ranks (1 thread each) vs 1 process (2 threads)
# on the same global batch, measured back to back; prints both tables and the ratio.
#   bash bench/dp_throughput.sh [vlm-dp-bench flags]
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
one=$(build/bench/vlm-dp-bench "$@")
two=$(mpirun --oversubscribe -np 2 build/bench/vlm-dp-bench "$@")
echo "$one"; echo "$two"
rate() { grep '"overlap":true' | sed -E 's/.*"samples_per_second":([0-9.]+).*/\1/'; }
r1=$(echo "$one" | rate); r2=$(echo "$two" | rate)
awk -v a="$r2" -v b="$r1" 'BEGIN { printf "2 ranks x 1 thread / 1 process x 2 threads: %.1f / %.1f samples/s = %.3f\n", a, b, a / b }'
