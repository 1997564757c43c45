#pragma once
// A pre-LN transformer block: self-attention, optional cross-attention to the
// image tokens, FFN. The attention projections are passed in, so blocks built
// with the same projection module share its weights.

#include <torch/torch.h>

#include "model/attention.h"
#include "model/attention_dropout.h"

namespace vlm {

// Self-attention keys and values of one layer during decoding:
// [B, H, capacity, head_dim], grown by VlmModelImpl::decode_step.
struct SelfKVCache {
  torch::Tensor k;
  torch::Tensor v;
};

// What a vision block's self-attention may add, beyond the relative position
// bias it holds (undefined fields add nothing).
struct PatchAttention {
  // [b, T] int64: the full-grid position of each of the T tokens left after
  // visual-token pruning (the position bias is looked up by it); undefined
  // when all patches are there, in order.
  torch::Tensor index;
  // [b, T]: log saliency of each token, added to every logit toward it.
  torch::Tensor log_gate;
  // Out: [b, T], the mean attention each token receives (over heads and
  // queries), the importance that token pruning ranks by. Null: not wanted.
  torch::Tensor* received = nullptr;
};

struct BlockImpl : torch::nn::Module {
  // `cross_kv` undefined: no cross-attention (vision and unimodal text
  // blocks). The attention has the heads its projections have.
  BlockImpl(int64_t d_model, int64_t ffn_dim, SelfAttentionProjections self_attn, CrossKVProjection cross_kv = nullptr);

  // x: [B, T, D]. `causal_mask` as in attend(); `image_kv` required iff
  // cross-attention; `dropout` draws this layer's masks (training only).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& causal_mask,
                        const ImageKV* image_kv = nullptr, const DropoutDraw& dropout = DropoutDraw(),
                        const PatchAttention& patches = PatchAttention());

  // One decoding position: x [B, 1, D] at `position`; appends this token's
  // K/V to `cache`. `cross_weights`, if given, receives the cross-attention
  // weights [B, H, 1, N].
  torch::Tensor step(const torch::Tensor& x, int64_t position, SelfKVCache* cache,
                     const ImageKV* image_kv = nullptr, torch::Tensor* cross_weights = nullptr);

  bool has_cross_attention() const { return !cross_kv.is_empty(); }
  int64_t self_heads() const { return self_attn->heads; }
  int64_t cross_heads() const { return cross_kv->heads; }

  // [b, heads, 1, 1] multipliers of this layer's self- and cross-attention
  // weights per sample and head, or undefined (none): what head scoring
  // differentiates (model/head_pruning.h). Not used in decoding.
  torch::Tensor self_gate, cross_gate;
  torch::nn::LayerNorm ln_self{nullptr};
  SelfAttentionProjections self_attn{nullptr};
  torch::nn::LayerNorm ln_cross{nullptr};
  Linear cross_q{nullptr};
  CrossKVProjection cross_kv{nullptr};
  Linear cross_out{nullptr};
  torch::nn::LayerNorm ln_ffn{nullptr};
  Linear ffn_in{nullptr};
  Linear ffn_out{nullptr};

 private:
  torch::Tensor cross_attention(const torch::Tensor& x, const ImageKV& image_kv, const DropoutDraw& dropout,
                                torch::Tensor* weights = nullptr);
  // The self-attention logit bias: position bias (looked up by patches.index) plus the saliency gate.
  torch::Tensor self_bias(const PatchAttention& patches, int64_t batch);
  torch::Tensor ffn(const torch::Tensor& x);
};
TORCH_MODULE(Block);

}  // namespace vlm
