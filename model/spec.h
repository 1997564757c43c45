#pragma once
// The model's shape: everything needed to build it, as plain numbers.

#include <cstdint>

namespace vlm {

class ModelConfig;  // proto/config.proto

struct ModelSpec {
  int64_t d_model = 64;
  int64_t heads = 4;
  int64_t ffn_mult = 4;
  int64_t embed_dim = 64;        // contrastive embedding width
  int64_t image_height = 28;     // pixels
  int64_t image_width = 28;
  int64_t image_channels = 1;    // 1 grey, 3 RGB
  int64_t patch_size = 7;
  int64_t vision_layers = 2;
  int64_t vision_self_attn_share = 1;  // 1 = none, 0 = all layers share one set
  bool vision_relative_bias = false;   // a learned bias per head and 2-D patch offset
  int64_t unimodal_layers = 1;
  int64_t multimodal_layers = 2;
  int64_t text_self_attn_share = 1;    // over unimodal then multimodal layers
  int64_t cross_kv_share = 1;          // over multimodal layers
  int64_t vocab_size = 32;
  int64_t max_tokens = 12;
  double contrastive_weight = 1.0;
  double caption_weight = 2.0;
  bool reuse_image_kv = true;

  int64_t head_dim() const { return d_model / heads; }
  int64_t ffn_dim() const { return d_model * ffn_mult; }
  int64_t patch_rows() const { return image_height / patch_size; }
  int64_t patch_columns() const { return image_width / patch_size; }
  int64_t image_tokens() const { return patch_rows() * patch_columns(); }
  int64_t patch_values() const { return image_channels * patch_size * patch_size; }
  int64_t text_layers() const { return unimodal_layers + multimodal_layers; }
  int64_t vision_attn_groups() const { return share_groups(vision_layers, vision_self_attn_share); }
  int64_t text_attn_groups() const { return share_groups(text_layers(), text_self_attn_share); }
  int64_t cross_kv_groups() const { return share_groups(multimodal_layers, cross_kv_share); }

  // Layers [g*size, (g+1)*size) share set g; size 0 means one set for all.
  static int64_t share_groups(int64_t layers, int64_t size) {
    return size == 0 ? 1 : (layers + size - 1) / size;
  }
  static int64_t share_group_of(int64_t layer, int64_t size) { return size == 0 ? 0 : layer / size; }
};

// The spec for `config` on images of the given size and channels with the given vocabulary.
ModelSpec model_spec(const ModelConfig& config, int64_t image_height, int64_t image_width, int64_t image_channels,
                     int64_t vocab_size);

}  // namespace vlm
