#include "model/block.h"

#include <glog/logging.h>

#include "model/saliency.h"

namespace vlm {

namespace {

// The attention weights' multiplier: dropout's and the head gate's, either, or none.
torch::Tensor times(const torch::Tensor& keep, const torch::Tensor& gate) {
  if (!gate.defined()) return keep;
  return keep.defined() ? keep * gate : gate;
}

}  // namespace

BlockImpl::BlockImpl(int64_t d_model, int64_t ffn_dim, SelfAttentionProjections shared_self_attn,
                     CrossKVProjection shared_cross_kv) {
  ln_self = register_module("ln_self", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d_model})));
  self_attn = register_module("self_attn", std::move(shared_self_attn));
  if (!shared_cross_kv.is_empty()) {
    ln_cross = register_module("ln_cross", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d_model})));
    const int64_t width = shared_cross_kv->kv->options.out_features() / 2;  // heads x head_dim
    cross_q = register_module("cross_q", Linear(d_model, width));
    cross_kv = register_module("cross_kv", std::move(shared_cross_kv));
    cross_out = register_module("cross_out", Linear(width, d_model));
  }
  ln_ffn = register_module("ln_ffn", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d_model})));
  ffn_in = register_module("ffn_in", Linear(d_model, ffn_dim));
  ffn_out = register_module("ffn_out", Linear(ffn_dim, d_model));
}

torch::Tensor BlockImpl::ffn(const torch::Tensor& x) {
  return ffn_out->forward(torch::gelu(ffn_in->forward(ln_ffn->forward(x))));
}

torch::Tensor BlockImpl::cross_attention(const torch::Tensor& x, const ImageKV& image_kv, const DropoutDraw& dropout,
                                         torch::Tensor* weights) {
  const int64_t heads = cross_heads();
  torch::Tensor q = split_heads(cross_q->forward(ln_cross->forward(x)), heads);
  const int64_t tq = q.size(2), tk = image_kv.k.size(2);
  torch::Tensor bias = dropout.token_bias(tk);
  if (image_kv.log_gate.defined()) bias = bias.defined() ? bias + key_bias(image_kv.log_gate) : key_bias(image_kv.log_gate);
  return cross_out->forward(merge_heads(attend(q, image_kv.k, image_kv.v, torch::Tensor(), bias,
                                               times(dropout.weight_keep(/*cross=*/true, heads, tq, tk), cross_gate), weights)));
}

torch::Tensor BlockImpl::self_bias(const PatchAttention& patches, int64_t b) {
  torch::Tensor bias = self_attn->position_bias();  // [H, N, N] or undefined
  if (bias.defined() && patches.index.defined()) {  // B[h, index[i], index[j]] for each sample
    const int64_t h = bias.size(0), n = bias.size(1), t = patches.index.size(1);
    const torch::Tensor rows = bias.unsqueeze(0).expand({b, h, n, n}).gather(2, patches.index.view({b, 1, t, 1}).expand({b, h, t, n}));
    bias = rows.gather(3, patches.index.view({b, 1, 1, t}).expand({b, h, t, t}));
  }
  if (patches.log_gate.defined()) bias = bias.defined() ? bias + key_bias(patches.log_gate) : key_bias(patches.log_gate);
  return bias;
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x, const torch::Tensor& causal_mask,
                                 const ImageKV* image_kv, const DropoutDraw& dropout, const PatchAttention& patches) {
  CHECK_EQ(has_cross_attention(), image_kv != nullptr) << "image K/V given iff cross-attention";
  const int64_t t = x.size(1), heads = self_heads();
  auto qkv = self_attn->qkv->forward(ln_self->forward(x)).chunk(3, -1);
  torch::Tensor weights;
  torch::Tensor attended = attend(split_heads(qkv[0], heads), split_heads(qkv[1], heads),
                                  split_heads(qkv[2], heads), causal_mask, self_bias(patches, x.size(0)),
                                  times(dropout.weight_keep(/*cross=*/false, heads, t, t), self_gate),
                                  patches.received != nullptr ? &weights : nullptr);
  if (patches.received != nullptr) *patches.received = weights.detach().mean({1, 2}).to(torch::kFloat);
  torch::Tensor h = x + self_attn->out->forward(merge_heads(attended));
  if (image_kv != nullptr) h = h + cross_attention(h, *image_kv, dropout);
  return h + ffn(h);
}

torch::Tensor BlockImpl::step(const torch::Tensor& x, int64_t position, SelfKVCache* cache,
                              const ImageKV* image_kv, torch::Tensor* cross_weights) {
  CHECK_EQ(has_cross_attention(), image_kv != nullptr) << "image K/V given iff cross-attention";
  CHECK_LT(position, cache->k.size(2)) << "decoding past the cache's capacity";
  const int64_t heads = self_heads();
  auto qkv = self_attn->qkv->forward(ln_self->forward(x)).chunk(3, -1);
  cache->k.narrow(2, position, 1).copy_(split_heads(qkv[1], heads));
  cache->v.narrow(2, position, 1).copy_(split_heads(qkv[2], heads));
  // The newest token may attend to every cached position: no mask needed.
  torch::Tensor attended = attend(split_heads(qkv[0], heads), cache->k.narrow(2, 0, position + 1),
                                  cache->v.narrow(2, 0, position + 1), torch::Tensor());
  torch::Tensor h = x + self_attn->out->forward(merge_heads(attended));
  if (image_kv != nullptr) h = h + cross_attention(h, *image_kv, DropoutDraw(), cross_weights);
  return h + ffn(h);
}

}  // namespace vlm
