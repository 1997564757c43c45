#!/usr/bin/env bash
# The main job: installs, builds, checks the Fashion-MNIST files from the
# dataset-fashion-mnist package, trains the VLM with 2 data-parallel MPI ranks
# through vlm-launch, prints the held-out evaluation, draws the run's curves
# (vlm-report) and names the run dir. A few minutes on 2 cores.
#   bash scripts/demo.sh [--set field.path=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh

DATA=/usr/share/datasets/fashion-mnist
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  gzip -t "$DATA/$f.gz" || { echo "demo: $DATA/$f.gz is missing or corrupt; reinstall dataset-fashion-mnist" >&2; exit 1; }
done
echo "demo: Fashion-MNIST found in $DATA (read directly from its IDX files)"

# Root may run mpirun here (containers); 2 ranks x 1 thread on a 2-core machine.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
run_dir=runs/demo-$(date +%Y%m%d-%H%M%S)
launch/vlm-launch --nproc-per-node "${VLM_RANKS:-2}" --run-dir "$run_dir" --resume never -- \
  build/trainer/vlm-train --config configs/fashion_mnist.pbtxt --set metrics.port_base=0 \
  --set checkpoint.dir="$run_dir/checkpoints" "$@"
launch/vlm-report "$run_dir"
echo "demo: run dir $run_dir (per-rank logs in attempt-0/, curves in report.png, steps in metrics.jsonl)"
