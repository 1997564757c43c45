#pragma once
// A pre-LN transformer block: self-attention, optional cross-attention to the
// image tokens, FFN. The attention projections are passed in, so blocks built
// with the same projection module share its weights.

#include <torch/torch.h>

#include "model/attention.h"

namespace vlm {

// Self-attention keys and values of one layer during decoding, preallocated
// to the longest caption: [B, H, max_tokens, head_dim].
struct SelfKVCache {
  torch::Tensor k;
  torch::Tensor v;
};

struct BlockImpl : torch::nn::Module {
  // `cross_kv` undefined: no cross-attention (vision and unimodal text blocks).
  BlockImpl(int64_t d_model, int64_t heads, int64_t ffn_dim, SelfAttentionProjections self_attn,
            CrossKVProjection cross_kv = nullptr);

  // x: [B, T, D]. `causal_mask` as in attend(); `image_kv` required iff cross-attention.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& causal_mask,
                        const ImageKV* image_kv = nullptr);

  // One decoding position: x [B, 1, D] at `position`; appends this token's K/V to `cache`.
  torch::Tensor step(const torch::Tensor& x, int64_t position, SelfKVCache* cache,
                     const ImageKV* image_kv = nullptr);

  bool has_cross_attention() const { return !cross_kv.is_empty(); }

  int64_t heads;
  torch::nn::LayerNorm ln_self{nullptr};
  SelfAttentionProjections self_attn{nullptr};
  torch::nn::LayerNorm ln_cross{nullptr};
  torch::nn::Linear cross_q{nullptr};
  CrossKVProjection cross_kv{nullptr};
  torch::nn::Linear cross_out{nullptr};
  torch::nn::LayerNorm ln_ffn{nullptr};
  torch::nn::Linear ffn_in{nullptr};
  torch::nn::Linear ffn_out{nullptr};

 private:
  torch::Tensor cross_attention(const torch::Tensor& x, const ImageKV& image_kv);
  torch::Tensor ffn(const torch::Tensor& x);
};
TORCH_MODULE(Block);

}  // namespace vlm
