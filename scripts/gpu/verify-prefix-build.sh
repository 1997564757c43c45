#!/usr/bin/env bash
# Run here, on Debian, where every dependency is also installed system-wide:
# proves that a build and a run need nothing but the unpacked prefix. In a
# private mount namespace the system's own copy of every file the prefix ships
# is hidden (hide_system_copies.py); then Open MPI's mpirun and orted run from
# the prefix, CMake configures against it (the paths it chose are printed from
# CMakeCache.txt and must all be in the prefix), vlm-train is built, and runs
# a few steps as an MPI singleton (no mpirun) on the Fashion-MNIST slice.
# Uses the CPU LibTorch of libtorch-dev; changes nothing outside BUILD_DIR.
#   bash scripts/gpu/verify-prefix-build.sh [BUILD_DIR]   (default /tmp/prefix-build)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-/tmp/prefix-build}
prefix=$PWD/build-gpu/prefix
slice=$PWD/gpu-deps/fashion-mnist

if [[ -z ${VLM_OUTER_MOUNT_NS:-} ]]; then
  bash scripts/gpu/unpack-deps.sh gpu-deps/debs "$prefix"
  VLM_OUTER_MOUNT_NS=$(readlink /proc/self/ns/mnt) exec unshare -m --propagation private bash "$0" "$@"
fi
python3 scripts/gpu/hide_system_copies.py "$prefix"
# shellcheck source=/dev/null
source "$prefix/env.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

step() { echo; echo "=== verify-prefix-build: $*"; }

step "the system's copies are gone"
for f in /usr/include/glog/logging.h /usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h /usr/bin/mpirun; do
  if head -c 200 "$f" 2>/dev/null | grep -q 'hidden by' || [[ ! -e $f ]]; then echo "hidden: $f"; else echo "STILL VISIBLE: $f"; exit 1; fi
done

step "Open MPI from the prefix: an MPI program as a singleton and under mpirun"
command -v mpirun orted protoc
bash scripts/gpu/mpi-smoke.sh
protoc --version

step "configure $build against the prefix"
rm -rf "$build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release "${VLM_DEPS_CMAKE_ARGS[@]}" > "$build.configure.log" 2>&1 ||
  { tail -40 "$build.configure.log"; exit 1; }
grep -E '^(MPI_CXX_COMPILER|MPI_mpi_LIBRARY|MPI_mpi_cxx_LIBRARY|MPIEXEC_EXECUTABLE|Protobuf_(INCLUDE_DIR|LIBRARY_RELEASE|PROTOC_EXECUTABLE)|glog_DIR|gflags_DIR|prometheus-cpp_DIR|civetweb_DIR|GTest_DIR|ZLIB_(INCLUDE_DIR|LIBRARY_RELEASE)|CURL_(INCLUDE_DIR|LIBRARY_RELEASE)|Unwind_(INCLUDE_DIR|LIBRARY)|Torch_DIR|VLM_WITH_NCCL|NCCL_(INCLUDE_DIR|LIBRARY)):' \
  "$build/CMakeCache.txt" | tee "$build.cache-paths.txt"
# Each of these must come from the prefix (zlib's library is the machine's own by design).
outside=$(grep -vE '^(Torch_DIR|VLM_WITH_NCCL|NCCL_|ZLIB_LIBRARY)' "$build.cache-paths.txt" | grep -v "=$prefix/" || true)
[[ -z $outside ]] || { echo "FAIL: found outside the prefix:"; echo "$outside"; exit 1; }
echo "all MPI, protobuf, glog, gflags, prometheus-cpp, civetweb, GTest, zlib-header and CURL paths are in $prefix"

step "build vlm-train (-j2, nice)"
time nice -n 10 cmake --build "$build" --target vlm-train -j 2 > "$build.build.log" 2>&1 || { tail -40 "$build.build.log"; exit 1; }
ldd "$build/trainer/vlm-train" | grep -E 'mpi|open-(pal|rte)|pmix|hwloc|event|protobuf|glog|gflags|unwind|prometheus|civetweb|torch_cpu|libz\.'
if ldd "$build/trainer/vlm-train" | grep -E 'mpi|protobuf|glog|gflags|prometheus' | grep -qv "$prefix/"; then
  echo "FAIL: a library above resolves outside the prefix"; exit 1
fi

step "vlm-train as an MPI singleton, 5 steps on the slice"
run_dir=$(mktemp -d /tmp/prefix-run.XXXXXX)
args=(--config configs/tiny_test.pbtxt --set "data.fashion_mnist_dir=$slice" --set loop.steps=5 --set loop.log_every=1
      --set eval.enabled=false --set metrics.enabled=false)
if VLM_RUN_DIR=$run_dir/probe timeout 120 "$build/trainer/vlm-train" "${args[@]}" --set device.kind=CPU --set loop.steps=1 \
     > "$run_dir/probe.log" 2>&1; then
  args+=(--set device.kind=CPU)
else
  echo "(device.kind=CPU rejected by this tree; running without it:)"; tail -3 "$run_dir/probe.log"
fi
VLM_RUN_DIR=$run_dir/run timeout 300 "$build/trainer/vlm-train" "${args[@]}" 2>&1 | tail -15
echo "metrics: $(wc -l < "$run_dir/run/metrics.jsonl") lines in $run_dir/run/metrics.jsonl"
python3 -c 'import json,sys; [print(json.loads(l)["step"], json.loads(l)["loss"]) for l in open(sys.argv[1])]' "$run_dir/run/metrics.jsonl"
echo; echo "verify-prefix-build: OK"
