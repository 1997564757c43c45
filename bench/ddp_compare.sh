#!/usr/bin/env bash
# vlmtrain against PyTorch DDP on the same machine, model shapes, global batch
# and threads: `vlm-dp-bench` and bench/ddp_reference.py (Debian's
# python3-torch, gloo, the same LibTorch 1.13) alternate A B A B, at each
# precision (bf16 is DDP under torch.autocast). DDP runs twice a round: as
# installed, and "tuned": given through GLIBC_TUNABLES the malloc settings
# vlmtrain makes for itself at start-up (Note [Host allocator]), so that the
# second ratio shows the framework and not only that fix. Prints every round, then per
# precision the median samples/s with the min-max and the ratios.
#
#   bash bench/ddp_compare.sh [--rounds 5] [--ranks 2] [--precision fp32,bf16] [--steps 8]
#
# Needs build/ (scripts/build.sh) and python3-torch (scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=5 ranks=2 precisions=fp32,bf16 steps=8
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2 ;;
    --ranks) ranks=$2 ;;
    --precision) precisions=$2 ;;
    --steps) steps=$2 ;;
    *) echo "ddp_compare.sh: unknown flag '$1'; flags: --rounds N --ranks N --precision fp32,bf16 --steps N" >&2; exit 2 ;;
  esac
  shift 2
done
[ -x build/bench/vlm-dp-bench ] || { echo "ddp_compare.sh: build/bench/vlm-dp-bench missing: run bash scripts/build.sh" >&2; exit 2; }
/usr/bin/python3 -c 'import torch' 2>/dev/null ||
  { echo "ddp_compare.sh: Debian's python3-torch is missing: run bash scripts/install-deps.sh" >&2; exit 2; }
tuned_env=(GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
threads=$(( $(nproc) / ranks )); [ "$threads" -ge 1 ] || threads=1
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
bf16_isa=$(grep -o -m1 -w 'avx512_bf16\|amx_bf16' /proc/cpuinfo | head -1 || true)
echo "ddp_compare: OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset: OpenBLAS chooses)} for both"
echo "ddp_compare: $ranks ranks x $threads threads, configs/bench.pbtxt shapes, global batch 128, $steps timed steps; $cpu ($(nproc) CPUs)"

field() { sed -E "s/.*\"$1\": ?([0-9.]+).*/\1/"; }
results=$(mktemp); trap 'rm -f "$results"' EXIT
for round in $(seq 1 "$rounds"); do
  for precision in ${precisions//,/ }; do
    if [ "$precision" = bf16 ] && [ -z "$bf16_isa" ]; then
      [ "$round" = 1 ] && echo "bf16: skipped, this processor has neither AVX512-BF16 nor AMX (/proc/cpuinfo)"
      continue
    fi
    vlm_line=$(mpirun -np "$ranks" build/bench/vlm-dp-bench --precision "$precision" --overlap on --steps "$steps" |
      grep '"bench":"dp_step"')
    ddp_line=$(/usr/bin/python3 bench/ddp_reference.py --ranks "$ranks" --threads "$threads" --precision "$precision" \
      --steps "$steps")
    tuned_line=$(env "${tuned_env[@]}" /usr/bin/python3 bench/ddp_reference.py --ranks "$ranks" --threads "$threads" \
      --precision "$precision" --steps "$steps")
    # The same model, or the comparison means nothing.
    if [ "$(echo "$vlm_line" | field parameters)" != "$(echo "$ddp_line" | field parameters)" ]; then
      echo "ddp_compare.sh: the models differ: vlmtrain has $(echo "$vlm_line" | field parameters) parameters," \
        "the PyTorch reference $(echo "$ddp_line" | field parameters); align bench/ddp_reference.py's shapes" \
        "with configs/bench.pbtxt" >&2
      exit 1
    fi
    vlm=$(echo "$vlm_line" | field samples_per_second) ddp=$(echo "$ddp_line" | field samples_per_second)
    tuned=$(echo "$tuned_line" | field samples_per_second)
    echo "$precision $vlm $ddp $tuned" >> "$results"
    awk -v r="$round" -v p="$precision" -v a="$vlm" -v b="$ddp" -v c="$tuned" \
      'BEGIN { printf "round %d %-4s vlmtrain %7.1f  DDP %7.1f  DDP tuned %7.1f samples/s  ratios %.3f %.3f\n",
               r, p, a, b, c, a / b, a / c }'
  done
done

# Per precision: medians with min-max of each, and of the ratios.
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
summary() {  # values on stdin -> "median (min-max)"
  local values; values=$(sort -g)
  printf '%.3g (%.3g-%.3g)' "$(echo "$values" | median)" "$(echo "$values" | head -1)" "$(echo "$values" | tail -1)"
}
for precision in ${precisions//,/ }; do
  grep -q "^$precision " "$results" || continue
  col() { awk -v p="$precision" -v c="$1" '$1 == p { print (c == 5) ? $2 / $3 : (c == 6) ? $2 / $4 : $c }' "$results"; }
  echo "$precision over $(col 2 | wc -l) rounds, samples/s median (min-max): vlmtrain $(col 2 | summary)," \
    "DDP $(col 3 | summary), DDP tuned $(col 4 | summary); ratio to DDP $(col 5 | summary)," \
    "to DDP tuned $(col 6 | summary)"
done
