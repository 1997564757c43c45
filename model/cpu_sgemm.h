#pragma once
// Note [CPU sgemm]: a float32 matrix product called directly, for the CPU
// paths where LibTorch's own goes through needless work. Debian's LibTorch
// 1.13, built without MKL, runs a batched matmul (attention: [B, H, T, T]
// from [B, H, T, dh] x [B, H, dh, T]) as one `select` + `addmm` per matrix,
// and ATen's per-operator overhead then costs several times the arithmetic
// (512 products of 32 x 32 x 32: 5.8 ms in ATen, 0.9 ms called directly,
// one thread). The kernel is found at run time: oneDNN's dnnl_sgemm (which
// LibTorch links; it picks AVX-512 where the CPU has it), else the BLAS's
// cblas_sgemm; a build whose LibTorch exports neither (pip wheels with MKL)
// keeps ATen's path, which is fast there.

#include <torch/torch.h>

#include <cstdint>

namespace vlm {

// Row-major C[m, n] = alpha op(A) op(B) + beta C, op(X) = X or its transpose
// (transpose_a / transpose_b); lda, ldb, ldc are the row strides in elements.
struct SgemmArgs {
  bool transpose_a = false, transpose_b = false;
  int64_t m = 0, n = 0, k = 0;
  const float* a = nullptr;
  int64_t lda = 0;
  const float* b = nullptr;
  int64_t ldb = 0;
  float* c = nullptr;
  int64_t ldc = 0;
  float alpha = 1, beta = 0;
};

// Whether a kernel was found (and VLM_CPU_SGEMM is not "off": ATen's path, to compare).
bool cpu_sgemm_available();
// Whether `x` takes the direct kernel: float32 on a CPU, outside autocast
// (whose products are bf16, LibTorch's), with a kernel found.
bool takes_cpu_sgemm(const torch::Tensor& x);
// Which: "dnnl_sgemm", "cblas_sgemm" or "none".
const char* cpu_sgemm_name();
void cpu_sgemm(const SgemmArgs& args);

}  // namespace vlm
