#include "model/block.h"

#include <glog/logging.h>

namespace vlm {

BlockImpl::BlockImpl(int64_t d_model, int64_t heads, int64_t ffn_dim,
                     SelfAttentionProjections shared_self_attn, CrossKVProjection shared_cross_kv)
    : heads(heads) {
  ln_self = register_module("ln_self", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d_model})));
  self_attn = register_module("self_attn", std::move(shared_self_attn));
  if (!shared_cross_kv.is_empty()) {
    ln_cross = register_module("ln_cross", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d_model})));
    cross_q = register_module("cross_q", torch::nn::Linear(d_model, d_model));
    cross_kv = register_module("cross_kv", std::move(shared_cross_kv));
    cross_out = register_module("cross_out", torch::nn::Linear(d_model, d_model));
  }
  ln_ffn = register_module("ln_ffn", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d_model})));
  ffn_in = register_module("ffn_in", torch::nn::Linear(d_model, ffn_dim));
  ffn_out = register_module("ffn_out", torch::nn::Linear(ffn_dim, d_model));
}

torch::Tensor BlockImpl::ffn(const torch::Tensor& x) {
  return ffn_out->forward(torch::gelu(ffn_in->forward(ln_ffn->forward(x))));
}

torch::Tensor BlockImpl::cross_attention(const torch::Tensor& x, const ImageKV& image_kv) {
  torch::Tensor q = split_heads(cross_q->forward(ln_cross->forward(x)), heads);
  return cross_out->forward(merge_heads(attend(q, image_kv.k, image_kv.v, torch::Tensor())));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x, const torch::Tensor& causal_mask,
                                 const ImageKV* image_kv) {
  CHECK_EQ(has_cross_attention(), image_kv != nullptr) << "image K/V given iff cross-attention";
  auto qkv = self_attn->qkv->forward(ln_self->forward(x)).chunk(3, -1);
  torch::Tensor attended = attend(split_heads(qkv[0], heads), split_heads(qkv[1], heads),
                                  split_heads(qkv[2], heads), causal_mask, self_attn->position_bias());
  torch::Tensor h = x + self_attn->out->forward(merge_heads(attended));
  if (image_kv != nullptr) h = h + cross_attention(h, *image_kv);
  return h + ffn(h);
}

torch::Tensor BlockImpl::step(const torch::Tensor& x, int64_t position, SelfKVCache* cache,
                              const ImageKV* image_kv) {
  CHECK_EQ(has_cross_attention(), image_kv != nullptr) << "image K/V given iff cross-attention";
  CHECK_LT(position, cache->k.size(2)) << "decoding past the preallocated cache";
  auto qkv = self_attn->qkv->forward(ln_self->forward(x)).chunk(3, -1);
  cache->k.narrow(2, position, 1).copy_(split_heads(qkv[1], heads));
  cache->v.narrow(2, position, 1).copy_(split_heads(qkv[2], heads));
  // The newest token may attend to every cached position: no mask needed.
  torch::Tensor attended = attend(split_heads(qkv[0], heads), cache->k.narrow(2, 0, position + 1),
                                  cache->v.narrow(2, 0, position + 1), torch::Tensor());
  torch::Tensor h = x + self_attn->out->forward(merge_heads(attended));
  if (image_kv != nullptr) h = h + cross_attention(h, *image_kv);
  return h + ffn(h);
}

}  // namespace vlm
