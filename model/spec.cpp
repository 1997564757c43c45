#include "model/spec.h"

#include <algorithm>
#include <cmath>

#include "proto/config.pb.h"

namespace vlm {

int64_t ModelSpec::kept_image_tokens() const {
  if (!prunes_tokens()) return image_tokens();
  return std::max<int64_t>(1, std::llround(prune_keep_ratio * static_cast<double>(image_tokens())));
}

int64_t ModelSpec::heads_of(AttentionKind kind, int64_t group) const {
  const std::vector<int64_t>& kept = kind == AttentionKind::kVisionSelf ? vision_kept_heads
                                     : kind == AttentionKind::kTextSelf ? text_kept_heads
                                                                         : cross_kept_heads;
  return kept.empty() ? heads : kept.at(static_cast<size_t>(group));
}

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
  s.stem_channels = c.vision().conv_stem().channels();
  s.stem_blocks = c.vision().conv_stem().blocks();
  s.stem_cbam = c.vision().conv_stem().cbam();
  s.cbam_reduction = c.vision().conv_stem().cbam_reduction();
  s.prune_keep_ratio = c.vision().token_pruning().keep_ratio();
  s.prune_after_layer = c.vision().token_pruning().after_layer();
  s.saliency = c.saliency().enabled();
  s.saliency_channels = c.saliency().channels();
  s.saliency_gate_vision = c.saliency().gate_vision();
  s.unimodal_layers = c.text().unimodal_layers();
  s.multimodal_layers = c.text().multimodal_layers();
  s.text_self_attn_share = c.text().self_attn_share_group();
  s.cross_kv_share = c.text().cross_kv_share_group();
  s.vocab_size = vocab_size;
  s.max_tokens = c.text().max_tokens();
  s.contrastive_weight = c.contrastive_weight();
  s.caption_weight = c.caption_weight();
  s.reuse_image_kv = c.reuse_image_kv();
  s.attention_dropout = c.dropout().attention();
  s.head_dropout = c.dropout().head();
  s.token_dropout = c.dropout().token();
  s.activation_checkpointing = c.activation_checkpointing();
  s.vision_kept_heads.assign(c.kept_heads().vision().begin(), c.kept_heads().vision().end());
  s.text_kept_heads.assign(c.kept_heads().text().begin(), c.kept_heads().text().end());
  s.cross_kept_heads.assign(c.kept_heads().cross().begin(), c.kept_heads().cross().end());
  return s;
}

}  // namespace vlm
