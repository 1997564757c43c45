#pragma once
// A small model and random inputs for the single-process model tests
// (attention toolbox, head pruning): 2 vision blocks, 1 unimodal and 2
// multimodal text blocks, each tower sharing one attention set, on the
// 28 x 56 canvas.

#include <torch/torch.h>

#include "model/spec.h"
#include "model/stage_io.h"

namespace vlm {

inline ModelSpec small_spec(int64_t heads = 2) {
  ModelSpec s;
  s.d_model = 16;
  s.heads = heads;
  s.ffn_mult = 2;
  s.embed_dim = 8;
  s.image_height = 28;
  s.image_width = 56;
  s.vision_layers = 2;
  s.vision_self_attn_share = 0;
  s.unimodal_layers = 1;
  s.multimodal_layers = 2;
  s.text_self_attn_share = 0;
  s.cross_kv_share = 0;
  s.vocab_size = 20;
  s.max_tokens = 8;
  return s;
}

// Images, tokens (<bos> first) and lengths of `batch` random samples, drawn from `seed`.
inline StageInputs random_inputs(const ModelSpec& s, int64_t batch, uint64_t seed, torch::Dtype dtype = torch::kFloat) {
  torch::manual_seed(seed);
  StageInputs in{torch::randn({batch, s.image_channels, s.image_height, s.image_width}, dtype),
                 torch::randint(4, s.vocab_size, {batch, s.max_tokens}, torch::kLong),
                 torch::randint(3, s.max_tokens + 1, {batch}, torch::kLong), 0};
  in.tokens.select(1, 0).fill_(1);
  return in;
}

// `s` with attention, head and token dropout all at rate `p`.
inline ModelSpec with_dropout(ModelSpec s, double p) {
  s.attention_dropout = p;
  s.head_dropout = p;
  s.token_dropout = p;
  return s;
}

}  // namespace vlm
