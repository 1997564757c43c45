#pragma once
// torch::optim::AdamW's update in one pass over memory. LibTorch 1.13 runs it
// as eight elementwise operations per tensor (scale, decay, two moment
// updates, sqrt, divide, add eps, step), each a full pass over its tensors;
// this reads p, g, m, v once and writes p, m, v once, vectorised for the
// processor it runs on (AVX-512, AVX2 or SSE, chosen at load time).
// Same operations in the same order as torch's, with the step's scalars
// rounded to float once, so results agree within a few ulps, not bit for bit
// (tests/optimizer_test.cpp). It is compiled without FMA contraction
// (-ffp-contract=off): the compiler fused some multiply-adds in the scalar
// head and tail of the loop and not in its vector body, so an element's result
// depended on where its run started, and ZeRO-1's shards, which start
// elsewhere than whole tensors, drifted from plain DP by 1e-6 in 3 steps.
// Now every element gets the same arithmetic wherever it lies.

#include <cstdint>

namespace vlm {

// One step's scalars, as torch::optim::AdamW derives them: in double, then
// rounded to float once.
struct AdamWUpdate {
  float grad_scale = 1;  // the gradient is multiplied by it first (clipping)
  float decay = 1;       // 1 - lr x weight_decay
  float beta1 = 0.9f, one_minus_beta1 = 0.1f;
  float beta2 = 0.999f, one_minus_beta2 = 0.001f;
  float sqrt_bias2 = 1;  // sqrt(1 - beta2^t)
  float eps = 1e-8f;
  float step_size = 0;   // -lr / (1 - beta1^t)
};

// Updates n values of p, m (first moment) and v (second moment) in place
// from the gradient g, on ATen's threads.
void fused_adamw(float* p, const float* g, float* m, float* v, int64_t n, const AdamWUpdate& u);

}  // namespace vlm
