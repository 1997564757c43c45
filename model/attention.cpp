#include "model/attention.h"

#include <cmath>

#include "model/batched_matmul.h"

namespace vlm {

SelfAttentionProjectionsImpl::SelfAttentionProjectionsImpl(int64_t d_model, int64_t heads, int64_t head_dim,
                                                           int64_t rows, int64_t columns)
    : heads(heads),
      qkv(register_module("qkv", Linear(torch::nn::LinearOptions(d_model, 3 * heads * head_dim).bias(false)))),
      out(register_module("out", Linear(heads * head_dim, d_model))) {
  if (rows == 0) return;
  // Patch (r, c) is token r x columns + c; the offset (dr, dc) of j from i,
  // each shifted to be non-negative, picks the column dr' x (2 columns - 1) + dc'.
  const torch::Tensor r = torch::arange(rows).repeat_interleave(columns), c = torch::arange(columns).repeat({rows});
  const torch::Tensor dr = r.unsqueeze(0) - r.unsqueeze(1) + (rows - 1), dc = c.unsqueeze(0) - c.unsqueeze(1) + (columns - 1);
  offset_index = register_buffer("offset_index", dr * (2 * columns - 1) + dc);
  relative_position_bias =
      register_parameter("relative_position_bias", torch::zeros({heads, (2 * rows - 1) * (2 * columns - 1)}));
}

torch::Tensor SelfAttentionProjectionsImpl::position_bias() const {
  if (!relative_position_bias.defined()) return {};
  const int64_t t = offset_index.size(0);
  return relative_position_bias.index_select(1, offset_index.reshape({-1})).view({-1, t, t});
}

CrossKVProjectionImpl::CrossKVProjectionImpl(int64_t d_model, int64_t heads, int64_t head_dim)
    : heads(heads),
      kv(register_module("kv", Linear(torch::nn::LinearOptions(d_model, 2 * heads * head_dim).bias(false)))) {}

ImageKV CrossKVProjectionImpl::project(const torch::Tensor& image_tokens) {
  auto kv_parts = kv->forward(image_tokens).chunk(2, /*dim=*/-1);
  ImageKV out;
  out.k = split_heads(kv_parts[0], heads);
  out.v = split_heads(kv_parts[1], heads);
  return out;
}

torch::Tensor split_heads(const torch::Tensor& x, int64_t heads) {
  const int64_t b = x.size(0), t = x.size(1), d = x.size(2);
  return x.view({b, t, heads, d / heads}).transpose(1, 2);
}

torch::Tensor merge_heads(const torch::Tensor& x) {
  const int64_t b = x.size(0), h = x.size(1), t = x.size(2), dh = x.size(3);
  return x.transpose(1, 2).reshape({b, t, h * dh});
}

torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                     const torch::Tensor& causal_mask, const torch::Tensor& bias, const torch::Tensor& keep,
                     torch::Tensor* weights_out) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  torch::Tensor scores = batched_matmul(q, k, /*transpose_b=*/true);
  // The bias in the scores' dtype (bf16 under autocast): an in-place add of a
  // float32 tensor into bf16 ones takes LibTorch 1.13's slow mixed-type path.
  if (bias.defined()) scores.add_(bias.to(scores.scalar_type()));
  scores.mul_(scale);
  if (causal_mask.defined()) scores.masked_fill_(causal_mask, -std::numeric_limits<float>::infinity());
  torch::Tensor weights = torch::softmax(scores, -1);
  if (weights_out != nullptr) *weights_out = weights;
  if (keep.defined()) weights = weights * keep.to(weights.scalar_type());
  return batched_matmul(weights, v, /*transpose_b=*/false);
}

}  // namespace vlm
