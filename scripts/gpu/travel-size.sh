#!/usr/bin/env bash
# Bytes of what travels to a GPU machine: the source tree as git sees it
# (tracked and untracked-not-ignored files) plus the fetched folder. Fails
# above the limit (default 50 MiB).
#   bash scripts/gpu/travel-size.sh [DEPS_DIR] [LIMIT_MIB]
set -euo pipefail
cd "$(dirname "$0")/../.."
deps=${1:-gpu-deps}
limit_mib=${2:-50}
bytes() { du -cb --apparent-size "$@" | tail -1 | cut -f1; }
src=$(git ls-files -z -co --exclude-standard | xargs -0 du -cb --apparent-size 2>/dev/null | tail -1 | cut -f1)
debs=$(bytes "$deps/debs")
data=$(bytes "$deps/fashion-mnist")
rest=$(bytes "$deps"/PACKAGES "$deps"/NEEDS)
total=$((src + debs + data + rest))
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "travel-size: source $(mib "$src"), packages $(mib "$debs"), Fashion-MNIST slice $(mib "$data"), lists $(mib "$rest"): total $(mib "$total") (limit $limit_mib MiB)"
((total <= limit_mib * 1048576)) || { echo "travel-size: over the limit" >&2; exit 1; }
