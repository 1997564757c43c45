#!/usr/bin/env bash
# Run here, with network, before a GPU check: downloads the Debian packages a
# CUDA machine lacks (Open MPI, protobuf, glog, prometheus-cpp, GoogleTest)
# and cuts a small Fashion-MNIST slice, into gpu-deps/ (ignored by git). That
# folder and the source tree are all that travel; scripts/gpu-check.sh unpacks
# the packages there into a private prefix (docs/gpu.md).
#   bash scripts/fetch-gpu-deps.sh [OUT_DIR]     (default gpu-deps)
set -euo pipefail
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,7s/^# \{0,1\}//p' "$0"
  exit 0
fi
cd "$(dirname "$0")/.."
out=${1:-gpu-deps}

# What vlmtrain's build finds with find_package, plus what they need at run time.
WANTED=(
  libopenmpi-dev openmpi-bin openmpi-common
  libprotobuf-dev protobuf-compiler
  libgoogle-glog-dev libgflags-dev libunwind-dev
  prometheus-cpp-dev libcivetweb-dev
  civetweb               # a web server program: civetweb's CMake config checks that it exists
  libcurl4-openssl-dev   # prometheus-cpp's CMake config asks for CURL (push); vlmtrain never links it
  libgtest-dev           # tests/ (vlm_gpu_tests)
  zlib1g-dev             # headers only: the runtime libz.so.1 is the machine's own
  libjpeg62-turbo-dev libpng-dev   # image decoding (data/); libsentencepiece is optional and not carried
)

# Never downloaded and never followed. Kept short by pruning high in the tree.
SKIP=(
  # The base system of any Ubuntu/CUDA image. A Debian copy first on
  # LD_LIBRARY_PATH would shadow the machine's own, newer one.
  libc6 libc6-dev libc-dev libstdc++6 libgcc-s1 gcc-12-base zlib1g libzstd1 liblzma5 libatomic1
  libudev1 libuuid1 libssl3 adduser debconf debconf-2.0 dpkg
  # Not needed to build or run vlmtrain on one machine.
  gfortran-12 gfortran-mod-15                     # Fortran MPI bindings
  libibverbs-dev libhwloc-dev libevent-dev libpmix-dev   # headers libopenmpi-dev drags in; mpi.h needs none
  libjs-jquery libjs-jquery-ui                    # HTML docs
  ssh-client openssh-client                       # mpirun to other hosts
  libhwloc-plugins       # optional hwloc probes (X11, OpenCL, NVML); pulls libxml2 and a 10 MB ICU
  ibverbs-providers      # RDMA drivers, loaded from /usr/lib only: useless in a relocated prefix
  googletest             # GoogleTest's sources; libgtest-dev has headers and libraries
  liblzma-dev            # libunwind-dev's, for static linking only
)
# Downloaded, but their own dependencies are not: never loaded at run time.
LEAVES=(libcurl4)

in_list() { local x=$1; shift; local y; for y; do [[ $x == "$y" ]] && return 0; done; return 1; }

# Breadth-first over `apt-cache depends` (Depends/PreDepends only). Plain
# `apt-cache depends --recurse` cannot prune a branch: through gfortran or
# libcurl4 it reaches half the distribution. Of "a | b" the first is taken, as
# apt does; a virtual package must be named in SKIP or in WANTED.
resolve() {
  local -A seen=()
  local queue=("$@") next p
  while ((${#queue[@]})); do
    next=()
    for p in "${queue[@]}"; do seen[$p]=1; done
    while read -r p; do
      [[ -n $p && -z ${seen[$p]:-} ]] && ! in_list "$p" "${SKIP[@]}" && next+=("$p")
    done < <(apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
               --no-enhances "${queue[@]}" | awk -v leaves=" ${LEAVES[*]} " '
      /^[^ ]/ { pkg = $1; group = ""; next }
      pkg != "" && index(leaves, " " pkg " ") { next }
      /^ +\|?(Pre)?Depends: / {
        name = $2
        if (group == "") group = name
        if ($1 ~ /^\|/) next          # more alternatives follow
        print group; group = ""
      }' | sort -u)
    ((${#next[@]})) || break
    for p in "${next[@]}"; do
      if [[ $p == \<*\> ]]; then
        in_list "${p:1:-1}" "${SKIP[@]}" && continue
        echo "fetch-gpu-deps: virtual package $p has no rule; add a real package to WANTED or it to SKIP" >&2
        exit 1
      fi
    done
    mapfile -t queue < <(printf '%s\n' "${next[@]}" | grep -v '^<' | sort -u)
  done
  printf '%s\n' "${!seen[@]}" | sort
}

mkdir -p "$out/debs"
mapfile -t packages < <(resolve "${WANTED[@]}")
echo "fetch-gpu-deps: ${#packages[@]} packages: ${packages[*]}"
rm -f "$out"/debs/*.deb
(cd "$out/debs" && apt-get download -q "${packages[@]}" >/dev/null)
(cd "$out/debs" && sha256sum ./*.deb > SHA256SUMS)

python3 scripts/gpu/fashion_slice.py /usr/share/datasets/fashion-mnist "$out/fashion-mnist" 4000 1000

# Unpack here once to record what the prefix asks of the machine's glibc and libstdc++.
bash scripts/gpu/unpack-deps.sh "$out/debs" build-gpu/prefix >/dev/null
bash scripts/gpu/abi-needs.sh build-gpu/prefix > "$out/NEEDS"
{
  echo "# Debian $(cut -d. -f1 /etc/debian_version) packages fetched $(date -u +%F) by scripts/fetch-gpu-deps.sh"
  # shellcheck disable=SC2016  # dpkg-deb's own ${field} format, not the shell's
  for deb in "$out"/debs/*.deb; do dpkg-deb -W --showformat='${Package} ${Version}\n' "$deb"; done
} > "$out/PACKAGES"

echo "fetch-gpu-deps: prefix needs $(paste -sd' ' "$out/NEEDS") from the machine"
bash scripts/gpu/travel-size.sh "$out"
