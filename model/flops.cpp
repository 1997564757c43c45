#include "model/flops.h"

namespace vlm {
namespace {

// FLOPs of one [rows x in] @ [in x out] product.
double matmul(double rows, double in, double out) { return 2.0 * rows * in * out; }

// Self-attention over `t` tokens of width d with heads of w values in all
// (projections + scores + weighted sum); w = d unless heads were pruned.
double self_attention(double t, double d, double w) {
  return matmul(t, d, 3 * w) + matmul(t, w, d) + 2 * matmul(t, w, t);
}

double ffn(double t, double d, double f) { return matmul(t, d, f) + matmul(t, f, d); }

}  // namespace

FlopCount flops_per_sample(const ModelSpec& s, int64_t text_tokens) {
  const double d = s.d_model, f = s.ffn_dim(), n = s.kept_image_tokens(), t = static_cast<double>(text_tokens);
  const double pixels = static_cast<double>(s.image_height * s.image_width);
  FlopCount c;
  c.vision = matmul(s.image_tokens(), s.patch_values(), d) + matmul(1, d, s.embed_dim);
  for (int64_t i = 0; i < s.vision_layers; ++i) {
    const double tokens = static_cast<double>(s.vision_tokens_at(i));
    const double w = static_cast<double>(s.heads_of(AttentionKind::kVisionSelf, ModelSpec::share_group_of(i, s.vision_self_attn_share)) * s.head_dim());
    c.vision += self_attention(tokens, d, w) + ffn(tokens, d, f);
  }
  if (s.stem_channels > 0) {  // 3x3 convolutions, as matmuls over the pixels
    c.vision += matmul(pixels, 9.0 * s.image_channels, s.stem_channels) +
                s.stem_blocks * matmul(pixels, 9.0 * s.stem_channels, s.stem_channels);
  }
  if (s.saliency) c.vision += matmul(pixels, 9.0 * s.image_channels, s.saliency_channels);
  c.text = matmul(1, d, s.embed_dim) + matmul(t, d, s.vocab_size);
  for (int64_t i = 0; i < s.text_layers(); ++i) {
    const int64_t group = ModelSpec::share_group_of(i, s.text_self_attn_share);
    c.text += self_attention(t, d, static_cast<double>(s.heads_of(AttentionKind::kTextSelf, group) * s.head_dim())) + ffn(t, d, f);
  }
  for (int64_t m = 0; m < s.multimodal_layers; ++m) {
    const int64_t group = ModelSpec::share_group_of(m, s.cross_kv_share);
    const double w = static_cast<double>(s.heads_of(AttentionKind::kCross, group) * s.head_dim());
    const bool computes_kv = !s.reuse_image_kv || m == 0 || group != ModelSpec::share_group_of(m - 1, s.cross_kv_share);
    c.text += matmul(t, d, w) + matmul(t, w, d) + 2 * matmul(t, w, n) +  // q, out, scores, sum
              (computes_kv ? matmul(n, d, 2 * w) : 0);                   // image K/V
  }
  return c;
}

}  // namespace vlm
