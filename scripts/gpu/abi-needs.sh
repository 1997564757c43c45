#!/usr/bin/env bash
# The newest glibc, libstdc++ and C++ ABI symbol versions that the ELF files
# under a prefix ask for: what the machine they travel to must have.
#   bash scripts/gpu/abi-needs.sh PREFIX     (prints GLIBC_x, GLIBCXX_x, CXXABI_x)
set -euo pipefail
# Executable scripts are not ELF: objdump refuses them, hence || true.
{ find "$1" -type f \( -name '*.so*' -o -perm -u+x \) -print0 | xargs -0 objdump -T 2>/dev/null || true; } |
  grep -oE '\b(GLIBC|GLIBCXX|CXXABI)_[0-9]+(\.[0-9]+)*\b' | sort -u |
  awk -F_ '{ print $1 "\t" $0 }' | sort -k1,1 -k2,2V | awk '{ last[$1] = $2 } END { for (k in last) print last[k] }' | sort
