#pragma once
// Activation checkpointing (model.activation_checkpointing): a block's
// forward pass keeps only its inputs; the backward pass runs the block again,
// with the same dropout masks (Note [Keyed dropout]) and the same autocast
// state, and differentiates that. Gradients are those of block->forward.

#include <torch/torch.h>

#include "model/block.h"

namespace vlm {

// block->forward(x, causal_mask, image_kv, dropout, patches), recomputed in
// the backward pass (patches.received must be null). The block must outlive
// the backward pass.
torch::Tensor checkpointed_forward(BlockImpl& block, const torch::Tensor& x, const torch::Tensor& causal_mask,
                                   const ImageKV* image_kv, const DropoutDraw& dropout, const PatchAttention& patches);

}  // namespace vlm
