#!/usr/bin/env bash
# An ablation on the demo task: each variant (a name and its config
# overrides) trains configs/fashion_mnist.pbtxt on 2 ranks with loop.seed 1,
# 2, 3 (the same seeds and steps for every variant, variants alternating
# within a seed), and is compared with the first variant on the end-of-run
# evaluation: zero-shot accuracy, retrieval R@1 both ways, caption exact
# match, samples/s and image-KV bytes per image. A variant "wins" when its
# mean zero-shot accuracy beats the first's by more than the wider of their
# two spreads (max - min over the seeds).
#
#   bash bench/ablation.sh [--seeds 3] [--first-seed 1] [--steps N] NAME=overrides ...
#   bash bench/ablation.sh default= rpb=model.vision.relative_position_bias=true
# Overrides: comma-separated field=value, as vlm-train --set takes them.
# --first-seed S runs seeds S..--seeds only, to add seeds to an earlier run.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=3 first_seed=1 steps=""
variants=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) seeds=$2; shift 2 ;;
    --first-seed) first_seed=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    *=*) variants+=("$1"); shift ;;
    *) echo "ablation.sh: '$1' is neither a flag (--seeds N, --first-seed S, --steps N) nor NAME=overrides" >&2; exit 2 ;;
  esac
done
[ ${#variants[@]} -ge 2 ] || { echo "ablation.sh: give at least two variants, the first the baseline" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
work=$(mktemp -d /tmp/vlm-ablation.XXXXXX)
trap 'rm -rf "$work"' EXIT
value() { sed -nE "s|$2|\1|p" "$1" | tail -1; }
declare -A results  # "name metric" -> space-separated values, one per seed
for seed in $(seq "$first_seed" "$seeds"); do
  for variant in "${variants[@]}"; do
    name=${variant%%=*} overrides=${variant#*=}
    sets=(--set metrics.port_base=0 --set metrics.enabled=false --set loop.seed="$seed" --set checkpoint.dir="$work/$name-$seed")
    [ -n "$steps" ] && sets+=(--set loop.steps="$steps")
    IFS=, read -ra extra <<< "$overrides"
    for o in "${extra[@]}"; do [ -n "$o" ] && sets+=(--set "$o"); done
    log=$work/$name-$seed.log
    mpirun --oversubscribe -np 2 build/trainer/vlm-train --config configs/fashion_mnist.pbtxt "${sets[@]}" > "$log" 2>&1 ||
      { echo "ablation.sh: $name, seed $seed failed:" >&2; tail -5 "$log" >&2; exit 1; }
    zero=$(value "$log" '^  zero-shot accuracy +([0-9.]+) .*')
    i2t=$(value "$log" '^  retrieval R@1 +image->text ([0-9.]+) .*')
    t2i=$(value "$log" '^  retrieval R@1 .*text->image ([0-9.]+) .*')
    caption=$(value "$log" '^  caption exact match +([0-9.]+) .*')
    rate=$(value "$log" '^step [0-9]+/[0-9]+ .* ([0-9.]+) samples/s .*')
    kv=$(build/checkpoint/vlm-ckpt inspect "$work/$name-$seed" | sed -nE 's/.* ([0-9]+) bytes per image.*/\1/p')
    echo "seed $seed $name: zero-shot $zero, R@1 i->t $i2t t->i $t2i, caption $caption, $rate samples/s, image KV $kv bytes"
    for metric in zero i2t t2i caption rate kv; do results["$name $metric"]+="${!metric} "; done
  done
done
stats() { tr ' ' '\n' | grep . | awk '{ s += $1; if (NR == 1 || $1 < lo) lo = $1; if (NR == 1 || $1 > hi) hi = $1 } END { printf "%.4f %.4f %.4f", s / NR, lo, hi }'; }
base=${variants[0]%%=*}
read -r base_mean base_lo base_hi <<< "$(stats <<< "${results["$base zero"]}")"
printf "\n%-12s %-26s %-26s %-26s %-26s %-22s %s\n" variant "zero-shot mean (min-max)" "R@1 image->text" "R@1 text->image" \
  "caption exact match" "samples/s" "image KV bytes"
for variant in "${variants[@]}"; do
  name=${variant%%=*}
  row=$(printf "%-12s" "$name")
  for metric in zero i2t t2i caption rate; do
    read -r mean lo hi <<< "$(stats <<< "${results["$name $metric"]}")"
    row+=$(printf " %-26s" "$mean ($lo-$hi)")
  done
  kv=$(tr ' ' '\n' <<< "${results["$name kv"]}" | grep . | sort -u | tr '\n' ' ')
  echo "$row $kv"
done
for variant in "${variants[@]:1}"; do
  name=${variant%%=*}
  read -r mean lo hi <<< "$(stats <<< "${results["$name zero"]}")"
  awk -v n="$name" -v b="$base" -v m="$mean" -v l="$lo" -v h="$hi" -v bm="$base_mean" -v bl="$base_lo" -v bh="$base_hi" 'BEGIN {
    spread = (h - l > bh - bl) ? h - l : bh - bl
    printf "%s against %s: zero-shot %+.4f, spread %.4f: %s\n", n, b, m - bm, spread, (m - bm > spread) ? "wins" : "does not win" }'
done
