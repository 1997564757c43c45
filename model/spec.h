#pragma once
// The model's shape: everything needed to build it, as plain numbers.

#include <cstdint>
#include <vector>

namespace vlm {

class ModelConfig;  // proto/config.proto

// The kinds of attention weight set (model/head_pruning.h).
enum class AttentionKind { kVisionSelf, kTextSelf, kCross };

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
  int64_t stem_channels = 0;           // conv stem maps; 0 = no stem
  int64_t stem_blocks = 1;             // residual conv blocks of the stem
  bool stem_cbam = true;               // CBAM in each stem block
  int64_t cbam_reduction = 4;
  double prune_keep_ratio = 1;         // image tokens kept after vision block prune_after_layer
  int64_t prune_after_layer = 1;       // 1 = after the first vision block
  bool saliency = false;               // saliency-gated cross-attention
  int64_t saliency_channels = 8;
  bool saliency_gate_vision = false;   // gate the vision self-attention too
  int64_t unimodal_layers = 1;
  int64_t multimodal_layers = 2;
  int64_t text_self_attn_share = 1;    // over unimodal then multimodal layers
  int64_t cross_kv_share = 1;          // over multimodal layers
  int64_t vocab_size = 32;
  int64_t max_tokens = 12;
  double contrastive_weight = 1.0;
  double caption_weight = 2.0;
  bool reuse_image_kv = true;
  double attention_dropout = 0;        // per attention weight
  double head_dropout = 0;             // per head, sample and layer
  double token_dropout = 0;            // per image token, sample and cross-attention layer
  bool activation_checkpointing = false;
  // Heads each attention weight set keeps after head pruning
  // (model.kept_heads), one per sharing group of its kind; empty: `heads`.
  std::vector<int64_t> vision_kept_heads, text_kept_heads, cross_kept_heads;

  // Every head has d_model / heads values, in a pruned set too.
  int64_t head_dim() const { return d_model / heads; }
  int64_t heads_of(AttentionKind kind, int64_t group) const;
  int64_t ffn_dim() const { return d_model * ffn_mult; }
  int64_t patch_rows() const { return image_height / patch_size; }
  int64_t patch_columns() const { return image_width / patch_size; }
  int64_t image_tokens() const { return patch_rows() * patch_columns(); }
  // Whether the ranking and gather run (a ratio just below 1 may still keep every token).
  bool prunes_tokens() const { return prune_keep_ratio < 1; }
  // Image tokens after the vision tower: what cross-attention and the image K/V cache see.
  int64_t kept_image_tokens() const;
  // Tokens entering vision block `layer` (0-based).
  int64_t vision_tokens_at(int64_t layer) const {
    return prunes_tokens() && layer >= prune_after_layer ? kept_image_tokens() : image_tokens();
  }
  // Channels the patches are cut from: the stem's maps, or the image's.
  int64_t patch_channels() const { return stem_channels > 0 ? stem_channels : image_channels; }
  int64_t patch_values() const { return patch_channels() * patch_size * patch_size; }
  bool has_dropout() const { return attention_dropout > 0 || head_dropout > 0 || token_dropout > 0; }
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
