#!/usr/bin/env bash
# Installs everything vlmtrain needs from Debian's packages. Idempotent: a
# second run installs nothing and takes a second.
set -euo pipefail

PACKAGES=(
  build-essential cmake ccache pkg-config
  libtorch-dev                         # LibTorch 1.13 (CPU)
  libopenblas0-pthread                 # reference BLAS is ~40x slower for matmuls
  libopenmpi-dev openmpi-bin
  libprotobuf-dev protobuf-compiler
  libgoogle-glog-dev libgflags-dev
  prometheus-cpp-dev
  libgtest-dev
  zlib1g-dev
  libjpeg62-turbo-dev libpng-dev       # image decoding for WebDataset shards
  libsentencepiece-dev                 # the subword tokenizer trained from captions
  dataset-fashion-mnist
  curl                                 # tests scrape the Prometheus endpoints
  jq                                   # vlm-launch reads flight records and writes targets; tests check JSON
  python3                              # tests read safetensors and embeddings with an independent reader
  python3-torch                        # bench/ddp_compare.sh: PyTorch DDP on the same LibTorch
  linux-perf                           # bench/perf_ops.py: a step's CPU time by LibTorch operator
  prometheus                           # promtool and a real server for the monitoring tests
  slurm-wlm munge                      # a real Slurm for the job-script tests
  gnuplot-nox                          # vlm-report's pictures
  openssh-server iproute2              # the 2-node test: sshd in a network namespace
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all ${#PACKAGES[@]} packages present"
fi
