#include "comm/threads.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <algorithm>

namespace vlm {

int threads_per_rank(int requested, int cpus, int sharers) {
  if (requested > 0) return requested;
  return std::max(1, cpus / std::max(1, sharers));
}

void apply_thread_count(int threads) {
  at::set_num_threads(threads);
  // OpenBLAS keeps its own pool; it is found at run time because LibTorch may
  // be linked against another BLAS (MKL on cluster builds).
  using SetThreads = void (*)(int);
  if (auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) set(threads);
}

}  // namespace vlm
