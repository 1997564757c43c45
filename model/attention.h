#pragma once
// Multi-head attention pieces. Projection modules are separate so that several
// layers can hold the same one: that is how attention weights are shared.

#include <torch/torch.h>

namespace vlm {

// Note [Bias-free projections]: W_q, W_k, W_v (and the cross-attention W_k,
// W_v) have no bias, as in PaLM and LLaMA. A key bias adds the same constant
// to every score of a query's row, which softmax removes: its true gradient
// is zero, and the computed one is rounding noise that Adam would turn into
// full-size random steps. W_o keeps its bias.

// Self-attention projections W_q, W_k, W_v (fused as one d x 3d matmul) and W_o.
struct SelfAttentionProjectionsImpl : torch::nn::Module {
  explicit SelfAttentionProjectionsImpl(int64_t d_model);
  torch::nn::Linear qkv{nullptr};
  torch::nn::Linear out{nullptr};
};
TORCH_MODULE(SelfAttentionProjections);

// Keys and values of the image tokens for one cross-attention layer: [B, H, N, head_dim].
struct ImageKV {
  torch::Tensor k;
  torch::Tensor v;
  int64_t bytes() const { return k.nbytes() + v.nbytes(); }
};

// Cross-attention K/V projection (fused W_k | W_v), shareable across layers.
struct CrossKVProjectionImpl : torch::nn::Module {
  explicit CrossKVProjectionImpl(int64_t d_model);
  ImageKV project(const torch::Tensor& image_tokens, int64_t heads);
  torch::nn::Linear kv{nullptr};
};
TORCH_MODULE(CrossKVProjection);

// [B, T, H*dh] -> [B, H, T, dh] and back.
torch::Tensor split_heads(const torch::Tensor& x, int64_t heads);
torch::Tensor merge_heads(const torch::Tensor& x);

// softmax(q k^T / sqrt(dh) + mask) v. `causal_mask` is [Tq, Tk] bool, true where
// attention is forbidden, or undefined for none.
torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                     const torch::Tensor& causal_mask);

}  // namespace vlm
