#include "model/flops.h"

namespace vlm {
namespace {

// FLOPs of one [rows x in] @ [in x out] product.
double matmul(double rows, double in, double out) { return 2.0 * rows * in * out; }

// Self-attention over `t` tokens of width d (projections + scores + weighted sum).
double self_attention(double t, double d) {
  return matmul(t, d, 3 * d) + matmul(t, d, d) + 2 * matmul(t, d, t);
}

double ffn(double t, double d, double f) { return matmul(t, d, f) + matmul(t, f, d); }

}  // namespace

FlopCount flops_per_sample(const ModelSpec& s) {
  const double d = s.d_model, f = s.ffn_dim(), n = s.image_tokens(), t = s.max_tokens;
  FlopCount c;
  c.vision = matmul(n, s.patch_values(), d) +
             s.vision_layers * (self_attention(n, d) + ffn(n, d, f)) + matmul(1, d, s.embed_dim);
  const double image_kv_computations = s.reuse_image_kv ? s.cross_kv_groups() : s.multimodal_layers;
  c.text = s.text_layers() * (self_attention(t, d) + ffn(t, d, f)) +
           s.multimodal_layers * (matmul(t, d, d) * 2 + 2 * matmul(t, d, n)) +  // q, out, scores, sum
           image_kv_computations * matmul(n, d, 2 * d) +                        // image K/V
           matmul(1, d, s.embed_dim) + matmul(t, d, s.vocab_size);
  return c;
}

}  // namespace vlm
