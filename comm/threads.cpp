#include "comm/threads.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <algorithm>

namespace vlm {
namespace {

// Found at run time: LibTorch may use another OpenMP runtime or another BLAS
// (MKL on cluster builds), and this library links neither directly.
template <typename F>
F find(const char* symbol) {
  return reinterpret_cast<F>(dlsym(RTLD_DEFAULT, symbol));
}
using SetThreads = void (*)(int);
using GetThreads = int (*)();

}  // namespace

int threads_per_rank(int requested, int cpus, int sharers) {
  if (requested > 0) return requested;
  return std::max(1, cpus / std::max(1, sharers));
}

void apply_thread_count(int threads) {
  at::set_num_threads(threads);
  if (auto set = find<SetThreads>("openblas_set_num_threads")) set(threads);  // OpenBLAS keeps its own pool
}

OneComputeThread::OneComputeThread() {
  at::get_num_threads();  // ATen sets up this thread's pool first, or it would undo ours at its first use
  const auto set_openmp = find<SetThreads>("omp_set_num_threads");
  const auto get_openmp = find<GetThreads>("omp_get_max_threads");
  if (set_openmp && get_openmp) {
    openmp_ = get_openmp();
    set_openmp(1);
  }
  using SetLocal = int (*)(int);  // MKL (cluster builds of LibTorch): returns the previous setting
  if (const auto set_mkl = find<SetLocal>("mkl_set_num_threads_local")) mkl_ = set_mkl(1);
}

OneComputeThread::~OneComputeThread() {
  using SetLocal = int (*)(int);
  if (mkl_ >= 0) find<SetLocal>("mkl_set_num_threads_local")(mkl_);
  if (openmp_ > 0) find<SetThreads>("omp_set_num_threads")(openmp_);
}

OneBlasThread::OneBlasThread() {
  const auto set_openblas = find<SetThreads>("openblas_set_num_threads");
  const auto get_openblas = find<GetThreads>("openblas_get_num_threads");
  if (set_openblas && get_openblas) {
    openblas_ = get_openblas();
    set_openblas(1);
  }
}

OneBlasThread::~OneBlasThread() {
  if (openblas_ > 0) find<SetThreads>("openblas_set_num_threads")(openblas_);
}

}  // namespace vlm
