#pragma once
// One pipeline stage of the VLM: a contiguous range of blocks in the order
// vision blocks, unimodal text blocks, multimodal text blocks (see
// docs/pipeline.md). Its forward is the model's only training forward pass:
// one process runs the stage of all blocks (VlmModel::forward). The stage owns the embeddings, norms and heads that
// belong next to its blocks; the contrastive loss is computed on the stage of
// the last unimodal block (it then holds both embeddings), the caption loss
// on the last stage.
//
// Note [What crosses a stage boundary]: after block e (exclusive end), the
// carry holds the vision hidden state while the vision tower is unfinished,
// the image tokens once it is finished (every later multimodal block
// cross-attends to them), the image embedding until the contrastive loss has
// used it, and the text hidden state once text has started. Per sample that
// is at most N*D + E + T*D floats (N image tokens, T text tokens). Image
// tokens are sent rather than the shared image K/V (2*N*D per sharing group):
// they are half the size, and a stage recomputes K/V once per sharing group it
// holds, so a group split across stages costs one extra K/V projection.
// With saliency gating the patches' log gates travel with the image tokens
// (N floats); after visual-token pruning inside the vision tower, so do the
// kept tokens' grid positions (the position bias is looked up by them).

#include <torch/torch.h>

#include <vector>

#include "model/parameters.h"
#include "model/vlm.h"

namespace vlm {

// Shapes of the carry leaving a stage that ends before block `end` (fields not
// carried are empty vectors), for micro-batches of `batch` samples whose token
// rows are `tokens` wide: known to both stages from the micro-batch each
// loaded, never sent.
std::vector<std::vector<int64_t>> carry_shapes(const ModelSpec& spec, int64_t end, int64_t batch, int64_t tokens);

int64_t model_blocks(const ModelSpec& spec);
// Forward matmul FLOPs of each block, for a balanced partition.
std::vector<double> block_costs(const ModelSpec& spec, int64_t text_tokens);
// Whether a stage may start at block i without splitting an attention-sharing group.
std::vector<bool> cuts_between_sharing_groups(const ModelSpec& spec);

class VlmStageImpl : public torch::nn::Module {
 public:
  // Takes blocks [first, end) and what belongs with them out of `full`, so
  // every stage starts from the same initial values; `full` may be dropped after.
  VlmStageImpl(VlmModelImpl& full, int64_t first, int64_t end);

  StageOutput forward(StageCarry carry, const StageInputs& inputs, const LossReduction& reduction = {});

  const ModelSpec& spec() const { return spec_; }
  int64_t first_block() const { return first_; }
  int64_t end_block() const { return end_; }
  // This stage's parameters under their names in the full model.
  const std::vector<UniqueParameter>& global_parameters() const { return global_parameters_; }

 private:
  // Block g of the model, with activation checkpointing when the spec asks
  // for it and gradients are being recorded.
  torch::Tensor run_block(int64_t g, const torch::Tensor& x, const torch::Tensor& causal_mask, const ImageKV* image_kv,
                          const torch::Tensor& dropout_keys, const PatchAttention& patches = PatchAttention());
  // Visual-token pruning: keeps the spec's kept_image_tokens() tokens that
  // `received` ([b, N] attention) ranks highest, with their gates and positions.
  void prune_tokens(const torch::Tensor& received, StageCarry* carry) const;

  ModelSpec spec_;
  int64_t first_, end_;
  std::vector<Block> blocks_;
  ConvStem conv_stem_{nullptr};
  SaliencyHead saliency_{nullptr};
  Linear patch_embed_{nullptr}, image_proj_{nullptr}, text_proj_{nullptr}, lm_head_{nullptr};
  torch::nn::LayerNorm vision_norm_{nullptr}, text_embed_norm_{nullptr}, caption_norm_{nullptr};
  torch::nn::Embedding token_embed_{nullptr};
  torch::Tensor vision_pos_, text_pos_, logit_scale_, causal_mask_;
  std::vector<UniqueParameter> global_parameters_;
};
TORCH_MODULE(VlmStage);

}  // namespace vlm
