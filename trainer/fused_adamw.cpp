#include "trainer/fused_adamw.h"

#include <ATen/Parallel.h>

#include <cmath>

namespace vlm {
namespace {

// Compiled once per instruction set; the loader picks the best the processor has.
__attribute__((target_clones("avx512f", "avx2", "default")))
void update(float* __restrict p, const float* __restrict g, float* __restrict m, float* __restrict v, int64_t n,
            AdamWUpdate u) {
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i] * u.grad_scale;
    const float mi = m[i] * u.beta1 + gi * u.one_minus_beta1;
    const float vi = v[i] * u.beta2 + u.one_minus_beta2 * gi * gi;
    const float denom = std::sqrt(vi) / u.sqrt_bias2 + u.eps;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * u.decay + u.step_size * mi / denom;
  }
}

}  // namespace

void fused_adamw(float* p, const float* g, float* m, float* v, int64_t n, const AdamWUpdate& u) {
  constexpr int64_t kGrain = 1 << 15;  // below this, one thread: a fork costs more than it saves
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    update(p + begin, g + begin, m + begin, v + begin, end - begin, u);
  });
}

}  // namespace vlm
