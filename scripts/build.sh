#!/usr/bin/env bash
# Installs dependencies (idempotent) and builds vlmtrain into build/ (Release, ccache, -j2).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "${VLM_BUILD_JOBS:-2}"
