#!/usr/bin/env bash
# The whole test suite: installs, builds, runs every CTest test (multi-rank
# ones under mpirun). .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
cd build
ctest --output-on-failure -j 2 --timeout 1500
