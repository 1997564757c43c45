#include "model/spec.h"

#include "proto/config.pb.h"

namespace vlm {

ModelSpec model_spec(const ModelConfig& c, int64_t image_height, int64_t image_width, int64_t image_channels,
                     int64_t vocab_size) {
  ModelSpec s;
  s.d_model = c.d_model();
  s.heads = c.heads();
  s.ffn_mult = c.ffn_mult();
  s.embed_dim = c.embed_dim();
  s.image_height = image_height;
  s.image_width = image_width;
  s.image_channels = image_channels;
  s.patch_size = c.vision().patch_size();
  s.vision_layers = c.vision().layers();
  s.vision_self_attn_share = c.vision().self_attn_share_group();
  s.vision_relative_bias = c.vision().relative_position_bias();
  s.unimodal_layers = c.text().unimodal_layers();
  s.multimodal_layers = c.text().multimodal_layers();
  s.text_self_attn_share = c.text().self_attn_share_group();
  s.cross_kv_share = c.text().cross_kv_share_group();
  s.vocab_size = vocab_size;
  s.max_tokens = c.text().max_tokens();
  s.contrastive_weight = c.contrastive_weight();
  s.caption_weight = c.caption_weight();
  s.reuse_image_kv = c.reuse_image_kv();
  return s;
}

}  // namespace vlm
