#pragma once
// The two CoCa losses.

#include <torch/torch.h>

namespace vlm {

// ln(100): the learnable logit scale is clamped to at most this (CLIP).
constexpr double kMaxLogLogitScale = 4.605170185988092;

// Symmetric InfoNCE over matching rows of unit-norm embeddings [B, E]:
// mean of image->text and text->image cross-entropy, logits scaled by
// exp(min(log_scale, ln 100)).
torch::Tensor contrastive_loss(const torch::Tensor& image_embedding,
                               const torch::Tensor& text_embedding, const torch::Tensor& log_scale);

// Next-token cross-entropy: logits [B, T, V] at position t predict tokens[t+1];
// `pad_id` targets are ignored. Summed, then divided by `target_count`, or by
// this batch's own number of targets when `target_count` is 0.
torch::Tensor caption_loss(const torch::Tensor& logits, const torch::Tensor& tokens, int64_t pad_id,
                           double target_count = 0);

}  // namespace vlm
