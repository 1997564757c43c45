#!/usr/bin/env bash
# The GPU check (docs/gpu.md). On a Linux x86-64 machine with NVIDIA GPUs, the
# CUDA toolkit, CMake and a CUDA PyTorch wheel, offline: unpacks the Debian
# packages fetched beforehand (scripts/fetch-gpu-deps.sh) into a private
# prefix, builds vlmtrain against the wheel's LibTorch and NCCL, then runs the
# GPU tests, training on the GPU against the CPU, and the benchmark. Every step
# is time-bounded and reports PASS, FAIL or what it skipped; the first failure
# stops the check and names its step.
#   bash scripts/gpu-check.sh [OUT_DIR]
# Output: $OUT if set, else OUT_DIR, else ./gpu-check-out: gpu-check.log (all
# of it), gpu-check.json (the benchmark's JSON line), and each step's files.
# Exit: 0 all passed on a GPU; 1 a step failed; 2 built and ran, but no GPU
# was visible, so the GPU steps were skipped.
# Settings: VLM_GPU_PYTHON (the wheel's python3, default /opt/torch/.venv/bin/python3),
# VLM_GPU_DEPS (gpu-deps), VLM_GPU_BUILD (build-gpu), VLM_GPU_JOBS (all cores), VLM_GPU_LIMIT_<step>,
# CUDA_HOME (default: from nvcc on PATH, else /usr/local/cuda), and, where the
# wheel is laid out differently: VLM_GPU_TORCH_PREFIX, VLM_GPU_NCCL_ROOT, VLM_GPU_CUDART_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

STEPS=(machine unpack mpi configure build libraries gpu-tests train train-2-gpus bench)
# Seconds per step. The whole check should take under 8 minutes on 16 cores;
# the limits are for a step that hangs, not the budget. VLM_GPU_LIMIT_<step>
# (dashes as underscores) changes one, e.g. VLM_GPU_LIMIT_build=3600 on 2 cores.
declare -A LIMIT=([machine]=120 [unpack]=120 [mpi]=120 [configure]=300 [build]=900 [libraries]=60
                  [gpu-tests]=300 [train]=300 [train-2-gpus]=300 [bench]=300)
for s in "${STEPS[@]}"; do
  override=VLM_GPU_LIMIT_${s//-/_}
  LIMIT[$s]=${!override:-${LIMIT[$s]}}
done
# The first 3 logged losses of the CUDA run must equal the CPU run's within this
# relative tolerance (float32 on both; summation order differs).
LOSS_RTOL=1e-3
LOSS_STEPS=3
TRAIN_STEPS=20

fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIPPED: $*"; echo "[$STEP] $*" >> "$VLM_GPU_OUT/skipped.txt"; }
version_ge() { [[ $(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1) == "$2" ]]; }

# The prefix's libraries, then the wheel's NCCL and CUDA runtime ahead of all
# (vlm-train must load the same libnccl and libcudart as LibTorch does).
use_prefix() {
  # An image's own MPI settings (NGC images set some for HPC-X) are not for this Open MPI.
  unset OPAL_PREFIX "${!OMPI_MCA_@}" "${!PMIX_MCA_@}"
  # shellcheck source=/dev/null
  source "$VLM_GPU_BUILD/prefix/env.sh"
  export LD_LIBRARY_PATH=$NCCL_ROOT/lib:$CUDART_DIR:$LD_LIBRARY_PATH
  export PATH=$CUDA_HOME/bin:$PATH CUDACXX=$CUDA_HOME/bin/nvcc
  # Containers often run as root; single-node MPI over shared memory only.
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
}

step_machine() {
  local glibc need_glibc libstdcxx have_glibcxx need_glibcxx
  echo "host $(hostname): $(uname -srm); $(sed -n 's/^PRETTY_NAME=//p' /etc/os-release | tr -d '"'); $(nproc) cores"
  [[ $(uname -m) == x86_64 ]] || fail "this machine is $(uname -m); the fetched .deb files are amd64"
  glibc=$(getconf GNU_LIBC_VERSION | awk '{ print $2 }')
  echo "glibc $glibc (getconf GNU_LIBC_VERSION); ldd: $(ldd --version | head -1)"
  need_glibc=$(sed -n 's/^GLIBC_//p' "$VLM_GPU_DEPS/NEEDS")
  version_ge "$glibc" "$need_glibc" ||
    fail "glibc $glibc is older than $need_glibc, which the Debian 12 libraries in $VLM_GPU_DEPS ask for"
  local tool
  for tool in g++ cmake dpkg; do command -v "$tool" > /dev/null || fail "$tool not found on PATH"; done
  libstdcxx=$(readlink -f "$(g++ -print-file-name=libstdc++.so.6)")
  have_glibcxx=$(grep -ao 'GLIBCXX_3\.4\.[0-9]*' "$libstdcxx" | sort -uV | tail -1)
  need_glibcxx=$(grep '^GLIBCXX_' "$VLM_GPU_DEPS/NEEDS")
  echo "libstdc++ $libstdcxx provides up to $have_glibcxx; the prefix needs $need_glibcxx"
  version_ge "${have_glibcxx#GLIBCXX_}" "${need_glibcxx#GLIBCXX_}" || fail "libstdc++ too old: $have_glibcxx < $need_glibcxx"
  echo "$(cmake --version | head -1); $(g++ --version | head -1)"
  [[ -x $CUDA_HOME/bin/nvcc ]] || fail "no nvcc in CUDA_HOME=$CUDA_HOME; set CUDA_HOME to the CUDA toolkit"
  echo "CUDA toolkit $CUDA_HOME: $("$CUDA_HOME/bin/nvcc" --version | tail -1)"
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader || true
  else
    echo "nvidia-smi: not on PATH"
  fi

  [[ -x $VLM_GPU_PYTHON ]] || fail "no Python at $VLM_GPU_PYTHON; set VLM_GPU_PYTHON to the python3 that has the CUDA PyTorch wheel"
  "$VLM_GPU_PYTHON" scripts/gpu/torch_facts.py > "$VLM_GPU_BUILD/torch-facts.sh" ||
    fail "$VLM_GPU_PYTHON cannot import torch"
  # shellcheck source=/dev/null
  source "$VLM_GPU_BUILD/torch-facts.sh"
  echo "PyTorch $TORCH_VERSION (CUDA ${TORCH_CUDA:-none}) from $VLM_GPU_PYTHON"
  echo "PyTorch C++ ABI: torch._C._GLIBCXX_USE_CXX11_ABI = $TORCH_CXX11_ABI"
  ((TORCH_CXX11_ABI == 1)) ||
    fail "the wheel uses the old C++ ABI (_GLIBCXX_USE_CXX11_ABI=0); Debian's protobuf, glog and gflags use the new one, and std::string in their interfaces would not link. Use a wheel built with the new ABI (PyTorch >= 2.7 on Linux)"
  [[ -n $TORCH_CUDA ]] || echo "WARNING: this PyTorch has no CUDA; only the CPU parts can run"

  local nccl=${VLM_GPU_NCCL_ROOT:-$WHEEL_NCCL_ROOT} cudart=${VLM_GPU_CUDART_DIR:-${WHEEL_CUDART_ROOT:+$WHEEL_CUDART_ROOT/lib}}
  [[ -n $nccl && -f $nccl/include/nccl.h ]] ||
    fail "no NCCL with headers from the wheel (nvidia/nccl: '${WHEEL_NCCL_ROOT}'); install nvidia-nccl-cu13 in the venv or set VLM_GPU_NCCL_ROOT"
  if [[ -z $cudart ]] || ! compgen -G "$cudart/libcudart.so*" > /dev/null; then
    fail "no libcudart from the wheel (nvidia/cu13 or nvidia/cuda_runtime); set VLM_GPU_CUDART_DIR"
  fi
  echo "NCCL: $nccl ($(cd "$nccl/lib" && echo libnccl.so*))"
  echo "CUDA runtime: $cudart ($(cd "$cudart" && echo libcudart.so*))"
  echo "GPUs visible to PyTorch: $GPU_COUNT${GPU_NAMES:+ ($GPU_NAMES, compute capability $GPU_CAPABILITY)}"
  {
    cat "$VLM_GPU_BUILD/torch-facts.sh"
    printf 'export NCCL_ROOT=%q CUDART_DIR=%q TORCH_PREFIX=%q\n' "$nccl" "$cudart" "${VLM_GPU_TORCH_PREFIX:-$TORCH_CMAKE_PREFIX}"
    # Spares torch's CMake probing the GPU architecture; vlmtrain compiles no CUDA code.
    [[ -z $GPU_CAPABILITY ]] || printf 'export TORCH_CUDA_ARCH_LIST=%q\n' "$GPU_CAPABILITY"
  } >> "$VLM_GPU_STATE"
  ((GPU_COUNT > 0)) || skip "no GPU visible to PyTorch (torch.cuda.device_count() = 0): the GPU steps below are skipped"
}

step_unpack() {
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    [[ -f $VLM_GPU_DEPS/fashion-mnist/$f.gz ]] || fail "$VLM_GPU_DEPS/fashion-mnist/$f.gz missing; run scripts/fetch-gpu-deps.sh where there is network"
  done
  bash scripts/gpu/unpack-deps.sh "$VLM_GPU_DEPS/debs" "$VLM_GPU_BUILD/prefix"
}

step_mpi() {
  use_prefix
  echo "OPAL_PREFIX=$OPAL_PREFIX"
  bash scripts/gpu/mpi-smoke.sh
}

step_configure() {
  use_prefix
  local bdir=$VLM_GPU_BUILD/build
  # A fresh cache: paths found by an earlier, failed run must not stick. The
  # prefix comes first: a CMAKE_PREFIX_PATH given to cmake is searched before
  # the one in the environment.
  rm -f "$bdir/CMakeCache.txt"
  # shellcheck disable=SC2154  # VLM_DEPS_CMAKE_ARGS comes from env.sh
  cmake -S . -B "$bdir" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$VLM_DEPS_PREFIX/usr;$TORCH_PREFIX" "${VLM_DEPS_CMAKE_ARGS[@]}" \
        -DVLM_NCCL_ROOT="$NCCL_ROOT" -DVLM_WITH_NCCL=ON -DCUDAToolkit_ROOT="$CUDA_HOME" \
        > "$VLM_GPU_OUT/configure.log" 2>&1 || { tail -40 "$VLM_GPU_OUT/configure.log"; fail "cmake configure (whole log: configure.log)"; }
  grep -E '^(Torch_DIR|VLM_WITH_NCCL|NCCL_(INCLUDE_DIR|LIBRARY)|MPI_CXX_COMPILER|MPI_mpi_LIBRARY|MPIEXEC_EXECUTABLE|Protobuf_(INCLUDE_DIR|LIBRARY_RELEASE|PROTOC_EXECUTABLE)|glog_DIR|gflags_DIR|prometheus-cpp_DIR|GTest_DIR|CUDAToolkit_(BIN_DIR|LIBRARY_DIR)):' \
    "$bdir/CMakeCache.txt" | tee "$VLM_GPU_OUT/cmake-paths.txt"
  grep -q "^NCCL_LIBRARY:FILEPATH=$NCCL_ROOT/" "$bdir/CMakeCache.txt" || fail "CMake took an NCCL other than $NCCL_ROOT"
  grep -q "^Torch_DIR:PATH=$(readlink -f "$TORCH_PREFIX")\|^Torch_DIR:PATH=$TORCH_PREFIX" "$bdir/CMakeCache.txt" ||
    fail "CMake took a LibTorch other than the one under $TORCH_PREFIX"
  local outside
  outside=$(grep -E '^(MPI|Protobuf|glog|gflags|prometheus|GTest)' "$VLM_GPU_OUT/cmake-paths.txt" | grep -v "=$VLM_DEPS_PREFIX/" || true)
  [[ -z $outside ]] || fail "CMake took these from outside the prefix $VLM_DEPS_PREFIX: $outside"
}

step_build() {
  use_prefix
  local jobs=${VLM_GPU_JOBS:-$(nproc)}
  echo "building vlm-train vlm_gpu_tests vlm-train-bench with $jobs jobs (log: build.log)"
  cmake --build "$VLM_GPU_BUILD/build" --target vlm-train vlm_gpu_tests vlm-train-bench -j "$jobs" \
    > "$VLM_GPU_OUT/build.log" 2>&1 || { grep -m5 -B2 -A8 'error' "$VLM_GPU_OUT/build.log" || tail -40 "$VLM_GPU_OUT/build.log"; fail "build (whole log: build.log)"; }
  tail -3 "$VLM_GPU_OUT/build.log"
}

# Exactly one libnccl and one libcudart, and each the wheel's.
step_libraries() {
  use_prefix
  local bin name lines
  for bin in trainer/vlm-train tests/vlm_gpu_tests bench/vlm-train-bench; do
    name=$(basename "$bin")
    ldd "$VLM_GPU_BUILD/build/$bin" > "$VLM_GPU_OUT/ldd-$name.txt"
    ! grep 'not found' "$VLM_GPU_OUT/ldd-$name.txt" || fail "$name: libraries not found (above)"
    for lib in nccl:"$NCCL_ROOT/lib" cudart:"$CUDART_DIR"; do
      lines=$(grep -E "lib${lib%%:*}\.so" "$VLM_GPU_OUT/ldd-$name.txt" || true)
      [[ $(grep -c . <<< "$lines") -eq 1 ]] ||
        fail "$name loads $(grep -c . <<< "$lines") lib${lib%%:*} (expected exactly one, the wheel's, from ${lib#*:}):"$'\n'"$lines"
      [[ $lines == *"=> ${lib#*:}/"* ]] || fail "$name loads lib${lib%%:*} from outside ${lib#*:}: $lines"
    done
  done
  grep -E 'nccl|cudart|torch_cuda|c10_cuda|libtorch_cpu|libmpi|protobuf|glog|gomp' "$VLM_GPU_OUT/ldd-vlm-train.txt"
  echo "one libnccl ($NCCL_ROOT/lib) and one libcudart ($CUDART_DIR) in each of vlm-train, vlm_gpu_tests, vlm-train-bench"
}

step_gpu_tests() {
  use_prefix
  local log=$VLM_GPU_OUT/gpu-tests.log rc=0
  VLM_TEST_FASHION_MNIST=$VLM_GPU_DEPS_ABS/fashion-mnist "$VLM_GPU_BUILD/build/tests/vlm_gpu_tests" > "$log" 2>&1 || rc=$?
  grep -E '^\[ +(OK|SKIPPED|FAILED|PASSED) +\]|^\[==========\]' "$log" || tail -20 "$log"
  ((rc == 0)) || fail "vlm_gpu_tests exited $rc (gpu-tests.log)"
  if ((GPU_COUNT == 0)); then
    skip "vlm_gpu_tests ran, but its GPU tests skip themselves: no GPU visible"
    return
  fi
  ! grep -q '^\[  SKIPPED \]' "$log" || skip "vlm_gpu_tests skipped tests on this GPU machine (listed above)"
  skip "one process on one GPU: the NCCL collectives ran on a world of one rank (and a send/receive to itself); NCCL between ranks is train-2-gpus' part"
}

train_run() {  # KIND DIR [launcher...]: 20 logged steps of configs/tiny_test.pbtxt
  local kind=$1 dir=$2
  shift 2
  rm -rf "$dir"
  VLM_RUN_DIR=$dir "$@" "$VLM_GPU_BUILD/build/trainer/vlm-train" --config configs/tiny_test.pbtxt \
    --set "data.fashion_mnist_dir=$VLM_GPU_DEPS_ABS/fashion-mnist" --set "loop.steps=$TRAIN_STEPS" --set loop.log_every=1 \
    --set eval.enabled=false --set metrics.enabled=false --set "device.kind=$kind" > "$dir.log" 2>&1 ||
    { tail -20 "$dir.log"; fail "vlm-train with device.kind=$kind (log: $dir.log)"; }
  [[ -s $dir/metrics.jsonl ]] || fail "vlm-train with device.kind=$kind wrote no $dir/metrics.jsonl"
}

step_train() {
  use_prefix
  local runs=$VLM_GPU_BUILD/runs
  mkdir -p "$runs" "$VLM_GPU_OUT/train"
  train_run CPU "$runs/cpu"
  cp "$runs/cpu/metrics.jsonl" "$VLM_GPU_OUT/train/cpu.jsonl"
  if ((GPU_COUNT == 0)); then
    "$VLM_GPU_PYTHON" scripts/gpu/compare_losses.py "$runs/cpu/metrics.jsonl" --names CPU CUDA
    skip "training with device.kind=CUDA and its comparison with the CPU run: no GPU visible"
    return
  fi
  train_run CUDA "$runs/cuda"
  cp "$runs/cuda/metrics.jsonl" "$VLM_GPU_OUT/train/cuda.jsonl"
  "$VLM_GPU_PYTHON" scripts/gpu/compare_losses.py "$runs/cpu/metrics.jsonl" "$runs/cuda/metrics.jsonl" \
    --rtol "$LOSS_RTOL" --steps "$LOSS_STEPS" --names CPU CUDA
}

# Two data-parallel ranks on two GPUs through mpirun and NCCL: the same global
# batch as the one-GPU run, so the same losses within the same tolerance.
step_train_2_gpus() {
  if ((GPU_COUNT < 2)); then
    skip "needs 2 GPUs, $GPU_COUNT visible: NCCL between ranks (data-parallel all-reduce across GPUs) not exercised"
    return
  fi
  use_prefix
  train_run CUDA "$VLM_GPU_BUILD/runs/cuda-2" mpirun -np 2 --bind-to none -x LD_LIBRARY_PATH -x VLM_RUN_DIR
  cp "$VLM_GPU_BUILD/runs/cuda-2/metrics.jsonl" "$VLM_GPU_OUT/train/cuda-2-ranks.jsonl"
  "$VLM_GPU_PYTHON" scripts/gpu/compare_losses.py "$VLM_GPU_BUILD/runs/cuda/metrics.jsonl" \
    "$VLM_GPU_BUILD/runs/cuda-2/metrics.jsonl" --rtol "$LOSS_RTOL" --steps "$LOSS_STEPS" --names "1 GPU" "2 GPUs"
}

step_bench() {
  if ((GPU_COUNT == 0)); then
    skip "vlm-train-bench on CUDA (fp32, bf16): no GPU visible"
    return
  fi
  use_prefix
  # configs/bench.pbtxt reads Fashion-MNIST from its default folder, absent
  # here: a copy that names the slice (kept, so the log names the config used).
  local config=$VLM_GPU_BUILD/bench.pbtxt
  sed "s|^data {|data {\n  fashion_mnist_dir: \"$VLM_GPU_DEPS_ABS/fashion-mnist\"|" configs/bench.pbtxt > "$config"
  grep -q fashion_mnist_dir "$config" || fail "could not point $config at the Fashion-MNIST slice"
  local rc=0
  "$VLM_GPU_BUILD/build/bench/vlm-train-bench" --config "$config" --device cuda --precision fp32,bf16 --steps 20 \
    > "$VLM_GPU_OUT/bench.log" 2>&1 || rc=$?
  cat "$VLM_GPU_OUT/bench.log"
  ((rc == 0)) || fail "vlm-train-bench exited $rc (bench.log)"
  tail -1 "$VLM_GPU_OUT/bench.log" > "$VLM_GPU_OUT/gpu-check.json"
  "$VLM_GPU_PYTHON" -c 'import json, sys; json.load(open(sys.argv[1]))' "$VLM_GPU_OUT/gpu-check.json" ||
    fail "the benchmark's last line is not one JSON object: $(cat "$VLM_GPU_OUT/gpu-check.json")"
  echo "saved $VLM_GPU_OUT/gpu-check.json"
}

# A step runs in a fresh bash under timeout, which ends it and its children.
if [[ ${1:-} == --step ]]; then
  STEP=$2
  # shellcheck source=/dev/null
  source "$VLM_GPU_STATE"
  "step_${STEP//-/_}"
  exit 0
fi

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"
  exit 0
fi
out=${OUT:-${1:-gpu-check-out}}
mkdir -p "$out"
export VLM_GPU_OUT; VLM_GPU_OUT=$(cd "$out" && pwd)
export VLM_GPU_PYTHON=${VLM_GPU_PYTHON:-/opt/torch/.venv/bin/python3}
export VLM_GPU_DEPS=${VLM_GPU_DEPS:-gpu-deps}
export VLM_GPU_DEPS_ABS; VLM_GPU_DEPS_ABS=$(cd "$VLM_GPU_DEPS" 2>/dev/null && pwd) ||
  { echo "gpu-check: $VLM_GPU_DEPS missing: run scripts/fetch-gpu-deps.sh where there is network, and bring the folder" >&2; exit 1; }
export VLM_GPU_BUILD; VLM_GPU_BUILD=$(mkdir -p "${VLM_GPU_BUILD:-build-gpu}" && cd "${VLM_GPU_BUILD:-build-gpu}" && pwd)
nvcc_path=$(command -v nvcc || true)
export CUDA_HOME=${CUDA_HOME:-${nvcc_path:+$(dirname "$(dirname "$nvcc_path")")}}
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export VLM_GPU_STATE=$VLM_GPU_BUILD/state.sh
: > "$VLM_GPU_STATE"
rm -f "$VLM_GPU_OUT/skipped.txt" "$VLM_GPU_OUT/gpu-check.json"
exec > >(tee "$VLM_GPU_OUT/gpu-check.log") 2>&1

echo "gpu-check: $(date -u '+%F %T') UTC, $(git log -1 --format='%h %s' 2>/dev/null | cut -c1-72), output in $VLM_GPU_OUT"
declare -A RESULT=()
started=$SECONDS
failed=""
for s in "${STEPS[@]}"; do
  echo
  echo "=== [$s] (limit ${LIMIT[$s]} s)"
  t0=$SECONDS
  rc=0
  timeout -k 10 "${LIMIT[$s]}" bash "$0" --step "$s" || rc=$?
  case $rc in
    0) RESULT[$s]="PASS";;
    124 | 137) RESULT[$s]="FAIL (timed out after ${LIMIT[$s]} s)";;
    *) RESULT[$s]="FAIL (exit $rc)";;
  esac
  grep -q "^\[$s\]" "$VLM_GPU_OUT/skipped.txt" 2>/dev/null && [[ $rc -eq 0 ]] && RESULT[$s]="PASS, with skips"
  echo "=== [$s] ${RESULT[$s]} in $((SECONDS - t0)) s"
  if ((rc != 0)); then failed=$s; break; fi
done

echo
echo "=== summary ($((SECONDS - started)) s in all)"
for s in "${STEPS[@]}"; do printf '  %-14s %s\n' "$s" "${RESULT[$s]:-not run}"; done
if [[ -s $VLM_GPU_OUT/skipped.txt ]]; then
  echo "skipped:"
  sed 's/^/  /' "$VLM_GPU_OUT/skipped.txt"
fi
((SECONDS - started <= 480)) || echo "NOTE: took more than the 8 minutes this check is meant to fit in"
if [[ -n $failed ]]; then
  echo "gpu-check: FAILED at step '$failed' (${RESULT[$failed]}); log: $VLM_GPU_OUT/gpu-check.log"
  exit 1
fi
# shellcheck source=/dev/null
source "$VLM_GPU_STATE"
if ((GPU_COUNT == 0)); then
  echo "gpu-check: INCOMPLETE: everything built and ran, but no GPU was visible, so the GPU steps were skipped"
  exit 2
fi
echo "gpu-check: PASSED on $GPU_COUNT GPU(s) ($GPU_NAMES)"
