#pragma once
// Attention dropout, head dropout and token dropout (model.dropout), with
// masks that are pure functions of their key.
//
// Note [Keyed dropout]: each mask element is hashed from (the sample's key,
// a salt naming the layer and the kind of mask, the element's index); the
// sample's key is hashed from (data.seed, step, the sample's index in the
// global batch). No generator state is involved, so a sample sees the same
// masks whichever rank, micro-batch or pipeline stage computes it, after a
// resume, and when a checkpointed block is recomputed in the backward pass.
// Text masks are indexed over the batch's width (the global micro-batch's
// longest caption, data/batch.h): a change of loop.micro_batches, which
// regroups the samples, may change them.
// The hash is integer arithmetic on tensors (no 64-bit overflow), so it runs
// on any device.

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "model/spec.h"

namespace vlm {

// One key in [0, 2^31 - 1) per sample: [positions.size()] int64 on `device`.
// `positions` are indices in the global batch of `step`.
torch::Tensor dropout_keys(uint64_t seed, int64_t step, const std::vector<int64_t>& positions,
                           const torch::Device& device);

// Values in [0, 1), [b, shape...]: element e of sample i depends only on (keys[i], salt, e).
torch::Tensor keyed_uniform(const torch::Tensor& keys, int64_t salt, at::IntArrayRef shape);

// What one layer needs to draw its masks. No keys (evaluation, decoding): no dropout.
struct DropoutDraw {
  torch::Tensor keys;  // [b] int64, or undefined
  double attention = 0, head = 0, token = 0;
  int64_t layer = 0;   // global block index

  DropoutDraw() = default;
  DropoutDraw(const ModelSpec& spec, const torch::Tensor& keys, int64_t layer);
  bool active() const { return keys.defined(); }
  // Multiplier of the attention weights [b, heads, tq, tk] from attention and
  // head dropout (kept values scaled by 1/(1-p)), or undefined if neither.
  // `cross` tells the layer's cross-attention from its self-attention.
  torch::Tensor weight_keep(bool cross, int64_t heads, int64_t tq, int64_t tk) const;
  // Additive logit bias [b, 1, 1, tokens]: -inf for hidden image tokens
  // (never all of them), 0 elsewhere; undefined without token dropout.
  torch::Tensor token_bias(int64_t tokens) const;
};

}  // namespace vlm
