#pragma once
// Batched matrix products for attention, on the direct kernel of Note [CPU
// sgemm] for float32 CPU tensors (no copies: heads split by a view are read
// through their strides) and torch::matmul otherwise (bf16 autocast, GPUs).

#include <torch/torch.h>

namespace vlm {

// a [..., m, k] times b [..., k, n], or, with transpose_b, times b^T for
// b [..., n, k]; the leading (batch) sizes of a and b are equal.
torch::Tensor batched_matmul(const torch::Tensor& a, const torch::Tensor& b, bool transpose_b);

}  // namespace vlm
