#pragma once
// Multi-head attention pieces. Projection modules are separate so that several
// layers can hold the same one: that is how attention weights are shared.

#include <torch/torch.h>

#include "model/linear.h"

namespace vlm {

// Note [Bias-free projections]: W_q, W_k, W_v (and the cross-attention W_k,
// W_v) have no bias, as in PaLM and LLaMA. A key bias adds the same constant
// to every score of a query's row, which softmax removes: its true gradient
// is zero, and the computed one is rounding noise that Adam would turn into
// full-size random steps. W_o keeps its bias.

// Self-attention projections W_q, W_k, W_v (fused as one d x 3hd matmul, h
// heads of head_dim d values; h x d = d_model unless heads were pruned) and
// W_o; for patches on a rows x columns grid (rows > 0), a relative position
// bias: a learned table [heads, (2 rows - 1) x (2 columns - 1)], one value
// per head and 2-D offset (Swin's form), shared wherever the projections are.
struct SelfAttentionProjectionsImpl : torch::nn::Module {
  SelfAttentionProjectionsImpl(int64_t d_model, int64_t heads, int64_t head_dim, int64_t rows = 0, int64_t columns = 0);
  // B [heads, T, T] for the T = rows x columns patches in row-major order;
  // B[h, i, j] depends only on the offset of patch j from patch i. Undefined
  // without the bias.
  torch::Tensor position_bias() const;
  int64_t heads;
  Linear qkv{nullptr};
  Linear out{nullptr};
  torch::Tensor relative_position_bias;  // the table, or undefined
  torch::Tensor offset_index;            // [T, T]: each pair's column of the table
};
TORCH_MODULE(SelfAttentionProjections);

// Keys and values of the image tokens for one cross-attention layer: [B, H, N, head_dim].
struct ImageKV {
  torch::Tensor k;
  torch::Tensor v;
  torch::Tensor log_gate;  // [B, N] log saliency of each image token (model/saliency.h), or undefined
  int64_t bytes() const { return k.nbytes() + v.nbytes(); }
};

// Cross-attention K/V projection (fused W_k | W_v, d_model -> 2 x heads x
// head_dim), shareable across layers; the layers' W_q and W_o match its heads.
struct CrossKVProjectionImpl : torch::nn::Module {
  CrossKVProjectionImpl(int64_t d_model, int64_t heads, int64_t head_dim);
  ImageKV project(const torch::Tensor& image_tokens);
  int64_t heads;
  Linear kv{nullptr};
};
TORCH_MODULE(CrossKVProjection);

// [B, T, H*dh] -> [B, H, T, dh] and back.
torch::Tensor split_heads(const torch::Tensor& x, int64_t heads);
torch::Tensor merge_heads(const torch::Tensor& x);

// (softmax((q k^T + bias) / sqrt(dh) + mask) * keep) v; `weights`, when
// given, receives the softmax [B, H, Tq, Tk] (before `keep`). `causal_mask` is
// [Tq, Tk] bool, true where attention is forbidden, or undefined for none;
// `bias` broadcasts to [B, H, Tq, Tk] ([H, Tq, Tk] position bias, [B, 1, 1, Tk]
// hidden tokens) or is undefined; `keep` multiplies the attention weights
// (dropout, model/attention_dropout.h) or is undefined.
torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                     const torch::Tensor& causal_mask, const torch::Tensor& bias = {},
                     const torch::Tensor& keep = {}, torch::Tensor* weights = nullptr);

}  // namespace vlm
