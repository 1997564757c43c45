#include "model/cpu_sgemm.h"

#include "model/autocast.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace vlm {
namespace {

// oneDNN: row-major, transposes as 'N' / 'T'; returns dnnl_status_t (0: success).
using DnnlSgemm = int (*)(char, char, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                          float, float*, int64_t);
// CBLAS: layout 101 = row-major, transposes 111 = none, 112 = transpose; int sizes.
using CblasSgemm = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*,
                            int);

struct Kernel {
  DnnlSgemm dnnl = nullptr;
  CblasSgemm cblas = nullptr;
};

const Kernel& kernel() {
  static const Kernel found = [] {
    Kernel k;
    const char* choice = std::getenv("VLM_CPU_SGEMM");
    if (choice != nullptr && std::strcmp(choice, "off") == 0) return k;
    k.dnnl = reinterpret_cast<DnnlSgemm>(dlsym(RTLD_DEFAULT, "dnnl_sgemm"));
    if (k.dnnl == nullptr) k.cblas = reinterpret_cast<CblasSgemm>(dlsym(RTLD_DEFAULT, "cblas_sgemm"));
    return k;
  }();
  return found;
}

}  // namespace

bool cpu_sgemm_available() { return kernel().dnnl != nullptr || kernel().cblas != nullptr; }

bool takes_cpu_sgemm(const torch::Tensor& x) {
  return x.device().is_cpu() && x.scalar_type() == torch::kFloat && !autocast_enabled(x.device()) &&
         cpu_sgemm_available();
}

const char* cpu_sgemm_name() {
  return kernel().dnnl ? "dnnl_sgemm" : kernel().cblas ? "cblas_sgemm" : "none";
}

void cpu_sgemm(const SgemmArgs& g) {
  if (const DnnlSgemm dnnl = kernel().dnnl) {
    const int status = dnnl(g.transpose_a ? 'T' : 'N', g.transpose_b ? 'T' : 'N', g.m, g.n, g.k, g.alpha, g.a, g.lda,
                            g.b, g.ldb, g.beta, g.c, g.ldc);
    if (status != 0) throw std::runtime_error("dnnl_sgemm failed with status " + std::to_string(status));
  } else if (const CblasSgemm cblas = kernel().cblas) {
    cblas(101, g.transpose_a ? 112 : 111, g.transpose_b ? 112 : 111, static_cast<int>(g.m), static_cast<int>(g.n),
          static_cast<int>(g.k), g.alpha, g.a, static_cast<int>(g.lda), g.b, static_cast<int>(g.ldb), g.beta, g.c,
          static_cast<int>(g.ldc));
  } else {
    throw std::logic_error("cpu_sgemm: no kernel (check cpu_sgemm_available() first)");
  }
}

}  // namespace vlm
