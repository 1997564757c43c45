#pragma once
// What a forward pass over a range of blocks takes and gives (the whole model
// is the range of all blocks; see model/pipeline_stage.h).

#include <torch/torch.h>

#include <functional>
#include <vector>

#include "model/spec.h"

namespace vlm {

// How a data-parallel replica turns its local batch into its share of the
// global batch's loss; the defaults give the loss of the local batch alone.
// The model itself knows nothing of ranks.
struct LossReduction {
  // Collects every rank's embedding rows before the contrastive loss
  // (comm/gather_with_grad.h).
  std::function<torch::Tensor(const torch::Tensor&)> gather;
  // Caption targets of the global batch divided by the number of ranks: each
  // rank's summed cross-entropy over this, averaged over ranks, is the
  // global token mean (a mean of per-rank means is not, when lengths differ).
  double caption_targets_per_rank = 0;
};

// Note [What crosses a stage boundary] (model/pipeline_stage.h).
struct StageCarry {
  torch::Tensor vision_hidden;    // [b, N, D]
  torch::Tensor image_tokens;     // [b, N, D]
  torch::Tensor image_embedding;  // [b, E]
  torch::Tensor text_hidden;      // [b, T, D]
  torch::Tensor patch_log_gate;   // [b, N]: log saliency of the image tokens (model.saliency)
  torch::Tensor patch_index;      // [b, N] float: the kept tokens' grid positions, after pruning in the vision tower
  std::vector<torch::Tensor*> fields() {
    return {&vision_hidden, &image_tokens, &image_embedding, &text_hidden, &patch_log_gate, &patch_index};
  }
};

struct StageInputs {
  torch::Tensor images;   // needed by the stage of vision block 0
  torch::Tensor tokens;   // by the first text block's stage and the last stage (targets)
  torch::Tensor lengths;  // by the stage of the last unimodal block
  int64_t pad_id = 0;
  // [b] int64 keys of the samples' dropout masks (model/attention_dropout.h);
  // undefined (no dropout) outside training.
  torch::Tensor dropout_keys{};
};

struct StageOutput {
  StageCarry carry;           // what goes to the next stage
  torch::Tensor contrastive;  // defined on the stage that computes it
  torch::Tensor caption;      // defined on the last stage
  // [b, N] int64 grid positions of the image tokens kept by visual-token
  // pruning; defined on the stage that finishes the vision tower, if pruned.
  torch::Tensor kept_patches;

  // contrastive_weight x contrastive + caption_weight x caption, of the parts
  // this stage computed (undefined if none).
  torch::Tensor weighted_loss(const ModelSpec& spec) const;
};

}  // namespace vlm
