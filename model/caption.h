#pragma once
// Captioning, greedy or sampled, with the KV cache (the fast path) or by
// recomputing the whole prefix at every position (the reference the cache must equal).

#include <torch/torch.h>

#include "model/sampling.h"
#include "model/vlm.h"

namespace vlm {

struct CaptionTokens {
  int64_t bos;
  int64_t eos;
  int64_t pad;
};

// Captions [B, max_tokens]: <bos> first, <pad> after <eos>; greedy unless
// `sampling` says otherwise (model/sampling.h). Image r is sample
// `first_sample + r`, which keys its random draws.
torch::Tensor decode_captions(VlmModel& model, const torch::Tensor& images, const CaptionTokens& ids,
                              const Sampling& sampling = {}, int64_t first_sample = 0, bool use_kv_cache = true);

// Teacher-forced logits [B, T, V] for `tokens`, one cached decode step per
// position; equals model->caption_logits on the same tokens.
torch::Tensor cached_caption_logits(VlmModel& model, const torch::Tensor& images,
                                    const torch::Tensor& tokens);

}  // namespace vlm
