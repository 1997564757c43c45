#include "model/kv_cache_layout.h"

namespace vlm {

KvCacheLayout kv_cache_layout(const ModelSpec& s) {
  KvCacheLayout layout;
  const int64_t per_head = 2 * s.head_dim() * 4;  // K and V of one head and token, float32
  layout.set_image_tokens(s.kept_image_tokens());  // after visual-token pruning
  layout.set_max_tokens(s.max_tokens);
  int64_t token_bytes = 0, image_bytes = 0;
  for (int64_t i = 0; i < s.text_layers(); ++i) {
    LayerKvCache* layer = layout.add_layers();
    const int64_t m = i - s.unimodal_layers;
    layer->set_layer(static_cast<int32_t>(i));
    layer->set_multimodal(m >= 0);
    layer->set_self_kv_layer(static_cast<int32_t>(i));
    const int64_t self_group = ModelSpec::share_group_of(i, s.text_self_attn_share);
    const int64_t heads = s.heads_of(AttentionKind::kTextSelf, self_group);
    const int64_t per_token = per_head * heads;
    layer->set_self_attn_weight_group(static_cast<int32_t>(self_group));
    layer->set_heads(static_cast<int32_t>(heads));
    layer->set_head_dim(static_cast<int32_t>(s.head_dim()));
    layer->set_dtype("float32");
    layer->set_self_kv_bytes_per_token(per_token);
    token_bytes += per_token;
    if (m < 0) {
      layer->set_cross_kv_layer(-1);
      layer->set_cross_kv_bytes_per_image(0);
      continue;
    }
    const int64_t group = ModelSpec::share_group_of(m, s.cross_kv_share);
    const int64_t first = s.cross_kv_share == 0 ? 0 : group * s.cross_kv_share;
    const int64_t source = s.reuse_image_kv ? first : m;
    layer->set_cross_kv_layer(static_cast<int32_t>(s.unimodal_layers + source));
    const int64_t cross_heads = s.heads_of(AttentionKind::kCross, group);
    layer->set_cross_heads(static_cast<int32_t>(cross_heads));
    const int64_t bytes = source == m ? per_head * cross_heads * s.kept_image_tokens() : 0;
    layer->set_cross_kv_bytes_per_image(bytes);
    image_bytes += bytes;
  }
  layout.set_bytes_per_token(token_bytes);
  layout.set_bytes_per_image(image_bytes);
  return layout;
}

}  // namespace vlm
